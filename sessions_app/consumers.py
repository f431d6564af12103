"""WebSocket feed of a session: the same events as the SSE feed, each with its ``id``."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth.models import AnonymousUser
from django.core.serializers.json import DjangoJSONEncoder

from musetalk_site.auth import TOKEN_PARAM
from musetalk_site.errors import ApplicationError, error_payload, websocket_refuse
from sessions_app.feeds import (
    ChunkLinks,
    chunk_links_for,
    closed_event,
    parse_last_event_id,
    session_for_access,
)
from sessions_app.models import StreamSession
from sessions_app.realtime import EventCursor, SessionEvent, is_terminal, session_group
from sessions_app.services import webrtc


class SessionEventsConsumer(AsyncJsonWebsocketConsumer):
    """``ws/sessions/{id}/?token=...&last_event_id=N``: replay after N, then live events."""

    group = ""
    cursor: EventCursor | None = None
    links: ChunkLinks | None = None
    session: StreamSession | None = None

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, cls=DjangoJSONEncoder)

    def _query(self, name: str) -> str | None:
        values = parse_qs(self.scope.get("query_string", b"").decode()).get(name)
        return values[0] if values else None

    async def connect(self) -> None:
        session_id = self.scope["url_route"]["kwargs"]["session_id"]
        user = self.scope.get("user") or AnonymousUser()
        try:
            last_id = parse_last_event_id(self._query("last_event_id"))
            session = await session_for_access(user, self._query(TOKEN_PARAM), session_id)
        except Exception as exc:
            await websocket_refuse(self, exc)
            return
        self.session = session
        self.group = session_group(session.session_id)
        # Chunk urls open as the SSE feed's do (fragmented copies, for MSE players).
        self.links = chunk_links_for(self._query(TOKEN_PARAM), session_id=session.session_id)
        self.cursor = EventCursor(session.session_id, last_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        backlog = await self.cursor.replay()
        if session.status != StreamSession.Status.ACTIVE and not any(map(is_terminal, backlog)):
            backlog.append(closed_event(session))
        await self._deliver(backlog)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def session_event(self, message: dict[str, Any]) -> None:
        """A live event from the worker or the web process (``session.event``)."""
        if self.cursor is not None:
            await self._deliver(await self.cursor.live(message))

    async def _deliver(self, events: list[SessionEvent]) -> None:
        for event in events:
            payload = self.links.event(event.payload) if self.links else event.payload
            await self.send_json({"id": event.id, **payload})
            if is_terminal(event):
                self.cursor = None
                await self.close()
                return


class WebrtcSignalingConsumer(SessionEventsConsumer):
    """``ws/webrtc/{id}/?token=...``: the session's events (as ``ws/sessions/{id}/``), and
    the signaling of ``/webrtc/sessions/{id}/offer`` and ``/ice`` as messages:

    - ``{"type": "offer", "sdp"}`` -> ``{"type": "answer", "sdp"}`` (after ICE gathering);
    - ``{"type": "ice", "candidate", "sdpMid", "sdpMLineIndex"}`` -> ``{"type": "ice", "status":
      "ok"}`` (a null candidate ends them);
    - anything wrong -> ``{"type": "error", "message", "extra"}``; the socket stays open.
    """

    async def connect(self) -> None:
        await super().connect()
        session = self.session
        if session is None:
            return  # refused
        if session.kind != StreamSession.Kind.WEBRTC:
            await self.close(code=4404)
            return
        await sync_to_async(lambda: session.avatar)()  # loaded here, not on the event loop

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        session = self.session
        if session is None:
            return
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind == "offer":
                answer = await webrtc.webrtc_offer(
                    session=session, offer={"sdp": content.get("sdp"), "type": "offer"}
                )
                await self.send_json(answer)
            elif kind in ("ice", "candidate"):
                fields = ("candidate", "sdpMid", "sdpMLineIndex")
                candidate = {k: content.get(k) for k in fields} if "candidate" in content else {}
                await webrtc.webrtc_candidate(session=session, payload=candidate)
                await self.send_json({"type": "ice", "status": "ok"})
            else:
                raise ApplicationError(
                    f"Unknown message type {kind!r}: expected offer or ice.",
                    {"type": kind},
                )
        except Exception as exc:
            payload = error_payload(exc)
            if payload is None:
                raise
            await self.send_json({"type": "error", **payload.body()})

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        try:
            content = json.loads(text_data or "")
        except ValueError:
            await self.send_json(
                {"type": "error", "message": "Messages must be JSON.", "extra": {}}
            )
            return
        await self.receive_json(content)
