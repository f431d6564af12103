"""Plain dicts shared by the session APIs, the SSE feed and the WebSocket feed."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone

from sessions_app import selectors
from sessions_app.models import StreamRequest, StreamSession
from sessions_app.realtime import last_event_id
from sessions_app.services.stream import chunk_url
from sessions_app.tokens import player_url


def _number(value: float) -> float | int:
    """2.0 -> 2, as the seed writes it; 0.5 stays 0.5."""
    return int(value) if float(value).is_integer() else value


def session_config(session: StreamSession) -> dict[str, Any]:
    return {
        "batch_size": session.batch_size,
        "fps": session.fps,
        "chunk_duration": _number(session.chunk_duration),
    }


def session_created_payload(session: StreamSession) -> dict[str, Any]:
    """The seed's response to ``POST /sessions/create``."""
    return {
        "session_id": session.session_id,
        "player_url": player_url(session_id=session.session_id),
        "avatar_id": session.avatar.avatar_id,
        "user_id": session.user_id,
        "config": session_config(session),
        "expires_in_seconds": settings.SESSION_TTL_SECONDS,
    }


def request_payload(request: StreamRequest | None) -> dict[str, Any] | None:
    if request is None:
        return None
    return {
        "request_id": request.request_id,
        "status": request.status,
        "total_chunks": request.total_chunks,
        "error": request.error,
        "queued_at": request.queued_at,
        "started_at": request.started_at,
        "first_chunk_at": request.first_chunk_at,
        "finished_at": request.finished_at,
    }


def chunk_list_payload(request: StreamRequest | None) -> list[dict[str, Any]]:
    if request is None:
        return []
    return [
        {
            "url": chunk_url(request.request_id, chunk.index),
            "index": chunk.index,
            "duration": chunk.duration,
            "creation_time": chunk.created_at,
        }
        for chunk in selectors.chunk_list(request=request)
    ]


def session_payload(session: StreamSession) -> dict[str, Any]:
    """Session fields, the active utterance and the chunks of the current/last one."""
    latest = selectors.request_latest(session=session)
    remaining = (session.expires_at - timezone.now()).total_seconds()
    open_ = session.status == StreamSession.Status.ACTIVE
    return {
        "session_id": session.session_id,
        "avatar_id": session.avatar.avatar_id,
        "user_id": session.user_id,
        "kind": session.kind,
        "status": session.status,
        "config": session_config(session),
        "created_at": session.created_at,
        "last_activity_at": session.last_activity_at,
        "expires_at": session.expires_at,
        "expires_in_seconds": max(0, int(remaining)) if open_ else 0,
        "ended_at": session.ended_at,
        "chunks_served": session.chunks_served,
        "events_url": f"/sessions/{session.session_id}/events",
        "last_event_id": last_event_id(session.session_id),
        "active_request": request_payload(selectors.request_active(session=session)),
        "current_request": request_payload(latest),
        "chunks": chunk_list_payload(latest),
    }
