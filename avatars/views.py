"""Server-sent event streams of avatar preparation and video generation progress."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from avatars.feeds import AVATAR_TERMINAL, JOB_TERMINAL, avatar_snapshot, job_snapshot
from musetalk_site import realtime
from musetalk_site.auth import request_user
from musetalk_site.errors import NotAuthenticatedError, error_response
from musetalk_site.sse import follow_group, sse_response


async def avatar_events(
    request: HttpRequest, avatar_id: str
) -> HttpResponse | StreamingHttpResponse:
    user = await request_user(request)
    try:
        if not user.is_authenticated:
            raise NotAuthenticatedError()
        await avatar_snapshot(user, avatar_id)
    except Exception as exc:
        return error_response(exc)
    group = realtime.avatar_group(user.pk, avatar_id)
    return sse_response(
        follow_group(group, lambda: avatar_snapshot(user, avatar_id), AVATAR_TERMINAL)
    )


async def job_events(request: HttpRequest, request_id: str) -> HttpResponse | StreamingHttpResponse:
    user = await request_user(request)
    try:
        if not user.is_authenticated:
            raise NotAuthenticatedError()
        await job_snapshot(user, request_id)
    except Exception as exc:
        return error_response(exc)
    group = realtime.job_group(user.pk, request_id)
    return sse_response(follow_group(group, lambda: job_snapshot(user, request_id), JOB_TERMINAL))
