"""What the session's event feeds (the SSE views and the WebSocket consumer) share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from musetalk_site.errors import ApplicationError
from musetalk_site.sse import KEEPALIVE_SECONDS, ChannelReceiver
from sessions_app import selectors
from sessions_app.models import StreamSession
from sessions_app.realtime import EventCursor, SessionEvent, is_terminal, session_group
from sessions_app.tokens import player_chunk_url, player_token_make, player_token_session_id


def parse_last_event_id(value: str | None) -> int:
    """The id a follower already has (0: none); a clear 400 for anything but an integer."""
    if value is None or value.strip() == "":
        return 0
    try:
        parsed = int(value.strip())
    except ValueError:
        raise ApplicationError(
            "last_event_id must be a non-negative integer.", {"last_event_id": value[:40]}
        ) from None
    if parsed < 0:
        raise ApplicationError("last_event_id must be a non-negative integer.", {})
    return parsed


@database_sync_to_async
def session_for_access(user: Any, token: str | None, session_id: str) -> StreamSession:
    return selectors.session_get_for_access(user=user, token=token, session_id=session_id)


def closed_event(session: StreamSession) -> SessionEvent:
    """Stands in for the ``session_ended`` event of a closed session whose store is gone."""
    payload = {"event": "session_ended", "session_id": session.session_id, "reason": session.status}
    return SessionEvent(0, payload)


@dataclass(frozen=True)
class ChunkLinks:
    """How the chunk urls of one follower's events open their chunk.

    MSE players append the bytes at a ``chunk`` event's ``url`` straight into a SourceBuffer
    (only fragmented MP4 goes in), so ``url`` is the chunk's fragmented copy. Its query
    carries what the follower's own fetch lacks: the player token it came with (so a
    replayed event reads as it did the first time), or, for one that came with an API key in
    ``?token=``, a fresh player token (never the key). A follower with a header, a session
    cookie or anonymous access fetches with those, and gets the bare path. Whoever follows
    the feed may read the session: the token opens nothing new."""

    session_id: str
    token: str | None = None  # the follower's player token
    mint: bool = False  # a fresh player token on every url

    def url(self, chunk_url: str) -> str:
        token = self.token
        if token is None and self.mint:
            token = player_token_make(session_id=self.session_id)
        return player_chunk_url(chunk_url=chunk_url, token=token)

    def event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` as this follower gets it (stored events keep ``/chunks/`` paths)."""
        url = payload.get("url")
        if payload.get("event") != "chunk" or not isinstance(url, str):
            return payload
        if not url.startswith("/chunks/"):
            return payload
        return {**payload, "url": self.url(url)}


def chunk_links_for(token: str | None, *, session_id: str) -> ChunkLinks:
    """The chunk links of a follower let in with ``token`` (its ``?token=``, if any)."""
    if not token:
        return ChunkLinks(session_id)
    try:
        is_player_token = player_token_session_id(token=token) == session_id
    except ApplicationError:  # expired: then it did not let the follower in either
        is_player_token = False
    if is_player_token:
        return ChunkLinks(session_id, token=token)
    return ChunkLinks(session_id, mint=True)


async def session_event_stream(
    session: StreamSession, last_id: int | None
) -> AsyncIterator[SessionEvent | None]:
    """The session's events after ``last_id`` (None: a new follower, which starts at
    ``realtime.join_point``), each once, in order, up to the one that ends the session;
    None after every KEEPALIVE_SECONDS without one (time for a keep-alive)."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = session_group(session.session_id)
    await layer.group_add(group, channel)
    cursor = EventCursor(session.session_id, last_id or 0)
    receiver = ChannelReceiver(layer, channel)
    try:
        # Subscribed before the backlog is read: an event published in between is both
        # stored and queued for us, and the cursor drops the second copy.
        events = await (cursor.replay() if last_id is not None else cursor.join())
        if session.status != StreamSession.Status.ACTIVE and not any(map(is_terminal, events)):
            events.append(closed_event(session))
        while True:
            for event in events:
                yield event
                if is_terminal(event):
                    return
            message = await receiver.receive(KEEPALIVE_SECONDS)
            if message is not None:
                events = await cursor.live(message)
            else:
                events = await cursor.replay()  # picks up a broadcast the layer lost
                if not events:
                    yield None
    finally:
        receiver.close()
        await layer.group_discard(group, channel)
