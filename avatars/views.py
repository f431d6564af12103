"""Server-sent event streams of avatar preparation and video generation progress."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

from avatars import selectors
from avatars.presenters import avatar_payload, job_payload
from musetalk_site import realtime
from musetalk_site.auth import request_user
from musetalk_site.sse import follow_group, sse_response

AVATAR_TERMINAL = {"ready", "error"}
JOB_TERMINAL = {"complete", "error", "cancelled"}
_AVATAR_EVENT_FOR_STATUS = {"ready": "ready", "failed": "error"}
_JOB_EVENT_FOR_STATUS = {"succeeded": "complete", "failed": "error", "cancelled": "cancelled"}


def _unauthorized() -> JsonResponse:
    return JsonResponse(
        {"message": "Authentication credentials were not provided.", "extra": {}}, status=401
    )


def _not_found(exc: Http404) -> JsonResponse:
    return JsonResponse({"message": str(exc), "extra": {}}, status=404)


@database_sync_to_async
def _avatar_snapshot(user: Any, avatar_id: str) -> dict[str, Any]:
    avatar = selectors.avatar_get_for_user(user=user, avatar_id=avatar_id)
    payload = avatar_payload(avatar)
    return {**payload, "event": _AVATAR_EVENT_FOR_STATUS.get(avatar.status, "progress")}


@database_sync_to_async
def _job_snapshot(user: Any, request_id: str) -> dict[str, Any]:
    job = selectors.job_get_for_user(user=user, request_id=request_id)
    return {**job_payload(job), "event": _JOB_EVENT_FOR_STATUS.get(job.status, "progress")}


async def avatar_events(request: HttpRequest, avatar_id: str) -> HttpResponse:
    user = await request_user(request)
    if not user.is_authenticated:
        return _unauthorized()
    try:
        await _avatar_snapshot(user, avatar_id)
    except Http404 as exc:
        return _not_found(exc)
    group = realtime.avatar_group(user.pk, avatar_id)
    return sse_response(
        follow_group(group, lambda: _avatar_snapshot(user, avatar_id), AVATAR_TERMINAL)
    )


async def job_events(request: HttpRequest, request_id: str) -> HttpResponse:
    user = await request_user(request)
    if not user.is_authenticated:
        return _unauthorized()
    try:
        await _job_snapshot(user, request_id)
    except Http404 as exc:
        return _not_found(exc)
    group = realtime.job_group(user.pk, request_id)
    return sse_response(follow_group(group, lambda: _job_snapshot(user, request_id), JOB_TERMINAL))
