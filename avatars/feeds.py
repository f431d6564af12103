"""What the progress feeds (SSE views and WebSocket consumers) send: one snapshot each."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from avatars import selectors
from avatars.presenters import avatar_payload, job_payload

AVATAR_TERMINAL = {"ready", "error"}
JOB_TERMINAL = {"complete", "error", "cancelled"}
_AVATAR_EVENT_FOR_STATUS = {"ready": "ready", "failed": "error"}
_JOB_EVENT_FOR_STATUS = {"succeeded": "complete", "failed": "error", "cancelled": "cancelled"}


@database_sync_to_async
def avatar_snapshot(user: Any, avatar_id: str) -> dict[str, Any]:
    """The user's avatar as a progress event (404 for anyone else's)."""
    avatar = selectors.avatar_get_for_user(user=user, avatar_id=avatar_id)
    payload = avatar_payload(avatar)
    return {**payload, "event": _AVATAR_EVENT_FOR_STATUS.get(avatar.status, "progress")}


@database_sync_to_async
def job_snapshot(user: Any, request_id: str) -> dict[str, Any]:
    """The user's video job as a progress event (404 for anyone else's)."""
    job = selectors.job_get_for_user(user=user, request_id=request_id)
    return {**job_payload(job), "event": _JOB_EVENT_FOR_STATUS.get(job.status, "progress")}
