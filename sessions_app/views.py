"""The session's server-sent event feed: stored events after Last-Event-ID, then live ones.

A connection without a last event id is a new follower: it gets what happens from now on
(plus the events so far of an utterance under way; see ``realtime.join_point``), never the
past utterances. Chunk events carry a ``url`` this follower can fetch as it is: the
fragmented copy for Media Source Extensions (``feeds.ChunkLinks``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from musetalk_site.auth import TOKEN_PARAM, request_user
from musetalk_site.errors import error_response
from musetalk_site.sse import KEEPALIVE, sse_format, sse_response
from sessions_app.feeds import (
    ChunkLinks,
    chunk_links_for,
    parse_last_event_id,
    session_event_stream,
    session_for_access,
)
from sessions_app.models import StreamSession


async def follow_session(
    session: StreamSession, last_id: int | None, links: ChunkLinks
) -> AsyncIterator[str]:
    """SSE frames (with ``id:`` lines) of every event after ``last_id`` (None: a new
    follower, see the module docstring), in order, until the session ends; chunk urls as
    ``links`` makes them."""
    async for event in session_event_stream(session, last_id):
        if event is None:
            yield KEEPALIVE
            continue
        yield sse_format(links.event(event.payload), event_id=event.id or None)


async def session_events(
    request: HttpRequest, session_id: str
) -> HttpResponse | StreamingHttpResponse:
    """``GET /sessions/{id}/events``: owner auth or ``?token=<player token>``; resumes after
    the ``Last-Event-ID`` header or ``?last_event_id=``."""
    user = await request_user(request)
    token = request.GET.get(TOKEN_PARAM)
    last_header = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    try:
        last_id = None if _absent(last_header) else parse_last_event_id(last_header)
        session = await session_for_access(user, token, session_id)
    except Exception as exc:
        return error_response(exc)
    links = chunk_links_for(token, session_id=session.session_id)
    return sse_response(follow_session(session, last_id, links))


def _absent(value: str | None) -> bool:
    return value is None or value.strip() == ""
