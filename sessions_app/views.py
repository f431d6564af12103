"""The session's server-sent event feed: stored events after Last-Event-ID, then live ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from channels.layers import get_channel_layer
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from musetalk_site.auth import TOKEN_PARAM, request_user
from musetalk_site.errors import error_response
from musetalk_site.sse import KEEPALIVE_SECONDS, sse_format, sse_response
from sessions_app.feeds import closed_event, parse_last_event_id, session_for_access
from sessions_app.models import StreamSession
from sessions_app.realtime import EventCursor, SessionEvent, is_terminal, session_group


async def follow_session(session: StreamSession, last_id: int) -> AsyncIterator[str]:
    """SSE frames (with ``id:`` lines) of every event after ``last_id``, in order, until
    the session ends."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = session_group(session.session_id)
    await layer.group_add(group, channel)
    cursor = EventCursor(session.session_id, last_id)
    try:
        # Subscribed before the backlog is read: an event published in between is both
        # stored and queued for us, and the cursor drops the second copy.
        backlog = await cursor.replay()
        if session.status != StreamSession.Status.ACTIVE and not any(map(is_terminal, backlog)):
            backlog.append(closed_event(session))
        async for frame in _frames(backlog):
            yield frame
        if _ended(backlog):
            return
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), KEEPALIVE_SECONDS)
                events = await cursor.live(message)
            except asyncio.TimeoutError:
                events = await cursor.replay()  # picks up a broadcast the layer lost
                if not events:
                    yield ": keep-alive\n\n"
            async for frame in _frames(events):
                yield frame
            if _ended(events):
                return
    finally:
        await layer.group_discard(group, channel)


def _ended(events: list[SessionEvent]) -> bool:
    return any(is_terminal(event) for event in events)


async def _frames(events: list[SessionEvent]) -> AsyncIterator[str]:
    """SSE frames up to and including the first terminal event."""
    for event in events:
        yield sse_format(event.payload, event_id=event.id or None)
        if is_terminal(event):
            return


async def session_events(
    request: HttpRequest, session_id: str
) -> HttpResponse | StreamingHttpResponse:
    """``GET /sessions/{id}/events``: owner auth or ``?token=<player token>``; resumes after
    the ``Last-Event-ID`` header or ``?last_event_id=``."""
    user = await request_user(request)
    last_header = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    try:
        last_id = parse_last_event_id(last_header)
        session = await session_for_access(user, request.GET.get(TOKEN_PARAM), session_id)
    except Exception as exc:
        return error_response(exc)
    return sse_response(follow_session(session, last_id))
