"""Server-sent events fed by a channel-layer group.

The stream starts with a snapshot read from the database (so a follower that connects
late still sees the current state), then forwards live events until a terminal one.

Every response opens with a comment frame (``OPENING``), sent as soon as the response
starts: daphne sends the status line and headers with the first body bytes, so without it
a browser's ``EventSource`` would not fire ``open`` until the first event (or keep-alive)
came. Comment frames carry no ``data:`` line: EventSource and line-based readers skip them.

When Redis goes away (killed, and being restarted), every stream ends cleanly, so that its
client reconnects (an ``EventSource`` sends its ``Last-Event-ID``). Left to the server, the
error would come after the response had started, and the connection would stay open, silent.

When the client hangs up, Django stops reading the response but leaves its async iterator to
the garbage collector, so the ``finally`` blocks of the frames' generators (leaving the
group, stopping the work the stream was for) would run at some later time, or never. The
response closes them itself when Django closes it (:class:`EventStreamResponse`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import StreamingHttpResponse

logger = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
OPENING = ": connected\n\n"
KEEPALIVE = ": keep-alive\n\n"
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


class ChannelReceiver:
    """Receives from one channel-layer channel, giving up after a timeout *without*
    cancelling the receive: the next call waits on the same one.

    Cancelling channels_redis's ``receive`` for every keep-alive is not safe: on Python 3.11
    redis-py's own ``wait_for`` may swallow the cancellation, and the feed's ``wait_for``
    then waits for the next event instead of timing out, so an idle feed sends no keep-alive
    for minutes (a proxy cuts it). Measured with 50 followers: timeouts overran by 10-38 s
    that way, by nothing this way (``bench/soak.py``).
    """

    def __init__(self, layer: Any, channel: str) -> None:
        self._layer = layer
        self._channel = channel
        self._pending: asyncio.Future[dict[str, Any]] | None = None

    async def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None when none came within ``timeout`` seconds."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._layer.receive(self._channel))
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            return None
        pending, self._pending = self._pending, None
        return pending.result()

    def close(self) -> None:
        """Stop waiting (the feed ended)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


def sse_format(payload: dict[str, Any], *, event_id: str | int | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {json.dumps(payload, default=str)}")
    return "\n".join(lines) + "\n\n"


async def follow_group(
    group: str,
    snapshot: Callable[[], Awaitable[dict[str, Any]]],
    terminal: set[str],
) -> AsyncIterator[str]:
    """Yield SSE frames: the snapshot, then live events, until an event in ``terminal``."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    receiver = ChannelReceiver(layer, channel)
    try:
        # Subscribed before the snapshot is read, so nothing between the two is missed.
        current = await snapshot()
        yield sse_format(current)
        if current.get("event") in terminal:
            return
        while True:
            message = await receiver.receive(KEEPALIVE_SECONDS)
            if message is None:
                yield KEEPALIVE
                continue
            payload = message.get("payload", {})
            yield sse_format(payload)
            if payload.get("event") in terminal:
                return
    finally:
        receiver.close()
        await layer.group_discard(group, channel)


async def _ended_cleanly(frames: AsyncIterator[str]) -> AsyncGenerator[str]:
    """``OPENING``, then ``frames`` up to the moment Redis goes away (see the module
    docstring); closing this closes ``frames``."""
    try:
        yield OPENING
        async for frame in frames:
            yield frame
    except REDIS_DOWN as exc:
        logger.warning("event stream ended: Redis is unreachable (%s)", exc)
    finally:
        close = getattr(frames, "aclose", None)
        if close is not None:
            await close()


class EventStreamResponse(StreamingHttpResponse):
    """An event stream whose frames' generators are closed when the response is: at once
    when the client hangs up, so their ``finally`` blocks run then (see the module
    docstring)."""

    def __init__(self, frames: AsyncIterator[str]) -> None:
        self._frames = _ended_cleanly(frames)
        super().__init__(self._frames, content_type="text/event-stream")
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"

    def close(self) -> None:
        # Django calls this from a worker thread of the request's event loop; a generator
        # still suspended there is closed on that loop.
        suspended = getattr(self._frames, "ag_frame", None) is not None
        if suspended and not getattr(self._frames, "ag_running", False):
            try:
                async_to_sync(_aclose)(self._frames)
            except Exception:  # closing must not fail the request's end
                logger.exception("could not close an event stream")
        super().close()


async def _aclose(frames: AsyncGenerator[str]) -> None:
    await frames.aclose()


def sse_response(frames: AsyncIterator[str]) -> StreamingHttpResponse:
    return EventStreamResponse(frames)
