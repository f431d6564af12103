"""Plain dicts shared by the session APIs, the SSE feed and the WebSocket feed."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from sessions_app import selectors
from sessions_app.models import StreamRequest, StreamSession
from sessions_app.realtime import last_event_id
from sessions_app.seed_hls_payloads import hls_brief
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
        "engine_timings": request.engine_timings,
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
    active = selectors.request_active(session=session)
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
        "active_request": request_payload(active),
        "current_request": request_payload(latest),
        "chunks": chunk_list_payload(latest),
        # The seed's keys: the streaming request id, and epoch seconds.
        "active_stream": active.request_id if active is not None else None,
        **seed_ages(session, time.time()),
    }


def seed_ages(session: StreamSession, now: float) -> dict[str, float]:
    """The seed's ``last_activity`` (epoch seconds), ``age_seconds`` and ``idle_seconds``."""
    last_activity = session.last_activity_at.timestamp()
    return {
        "last_activity": last_activity,
        "age_seconds": now - session.created_at.timestamp(),
        "idle_seconds": now - last_activity,
    }


def _session_brief(session: StreamSession, now: float) -> dict[str, Any]:
    """One open session in the seed's ``/sessions/stats`` and ``/sessions/live``; the
    session comes from ``selectors.session_open_list`` (annotated ``active_stream``)."""
    ages = seed_ages(session, now)
    return {
        "session_id": session.session_id,
        "user_id": session.user_id or None,
        "avatar_id": session.avatar.avatar_id,
        "kind": session.kind,
        "active_stream": getattr(session, "active_stream", None),
        "age_seconds": ages["age_seconds"],
        "idle_seconds": ages["idle_seconds"],
        **session_config(session),
    }


def session_stats_payload(user: User) -> dict[str, Any]:
    """Our counts, and the seed's ``sessions``: every open session in the caller's scope."""
    now = time.time()
    sessions = selectors.session_open_list(user=user)
    return {
        **selectors.session_stats(user=user),
        "sessions": [_session_brief(session, now) for session in sessions],
    }


def sessions_live_payload(user: User) -> dict[str, Any]:
    """The seed's ``GET /sessions/live``: the open sessions speaking now, by kind."""
    now = time.time()
    streams: dict[str, list[dict[str, Any]]] = {kind: [] for kind in StreamSession.Kind.values}
    for session in selectors.session_open_list(user=user):
        if session.kind == StreamSession.Kind.HLS:
            brief = hls_brief(session, now)
            if brief["active_stream"] is not None:
                streams[session.kind].append(brief)
        elif getattr(session, "active_stream", None) is not None:
            streams[session.kind].append(_session_brief(session, now))
    return {
        "total_live": sum(len(found) for found in streams.values()),
        "session_streams": streams[StreamSession.Kind.SSE],
        "hls_streams": streams[StreamSession.Kind.HLS],
        "webrtc_streams": streams[StreamSession.Kind.WEBRTC],
    }
