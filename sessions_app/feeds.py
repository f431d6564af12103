"""What the session's event feeds (the SSE view and the WebSocket consumer) share."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from musetalk_site.errors import ApplicationError
from sessions_app import selectors
from sessions_app.models import StreamSession
from sessions_app.realtime import SessionEvent


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
