from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
from asgiref.sync import sync_to_async

from musetalk_site.sse import OPENING, sse_format, sse_response


async def _frames_until_redis_dies() -> AsyncIterator[str]:
    yield sse_format({"event": "chunk", "index": 0}, event_id=1)
    raise redis.ConnectionError("Connection closed by server.")


async def _read(response) -> list[bytes]:
    return [part async for part in response]


@pytest.mark.asyncio
async def test_a_stream_ends_cleanly_when_redis_goes_away():
    response = sse_response(_frames_until_redis_dies())
    parts = await _read(response)
    assert parts == [OPENING.encode(), b'id: 1\ndata: {"event": "chunk", "index": 0}\n\n']


@pytest.mark.asyncio
async def test_other_errors_still_reach_the_server():
    async def broken() -> AsyncIterator[str]:
        yield sse_format({"event": "progress"})
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        await _read(sse_response(broken()))


@pytest.mark.asyncio
async def test_the_opening_frame_comes_before_the_first_event_exists():
    """Headers go out with the first body bytes: the opening comment is yielded before
    the frames' source is even asked for its first event."""
    asked = []

    async def frames() -> AsyncIterator[str]:
        asked.append(True)
        yield sse_format({"event": "progress"})

    parts = aiter(sse_response(frames()))
    assert await anext(parts) == OPENING.encode() and asked == []
    assert b"data:" in await anext(parts)


@pytest.mark.asyncio
@pytest.mark.django_db  # closing a response sends request_finished, which tidies connections
async def test_closing_the_response_of_a_client_that_hung_up_runs_the_frames_cleanup():
    """As Django does when its client hangs up: it stops reading mid-stream, then closes the
    response from a worker thread; the frames' ``finally`` must run then, not at some later
    garbage collection."""
    cleaned: list[str] = []

    async def endless() -> AsyncIterator[str]:
        try:
            while True:
                yield sse_format({"event": "progress"})
        finally:
            await asyncio.sleep(0)  # cleanup that awaits, as leaving a group does
            cleaned.append("done")

    response = sse_response(endless())
    reader = response.__aiter__()
    assert await reader.__anext__() == OPENING.encode()
    await reader.__anext__()  # one event read; then the client is gone
    await reader.aclose()  # what Django's aclosing() does to its own iterator
    assert cleaned == []  # that alone leaves the frames suspended
    await sync_to_async(response.close)()
    assert cleaned == ["done"]


@pytest.mark.asyncio
async def test_a_receive_that_times_out_is_kept_and_delivers_the_next_message(redis_server):
    """Keep-alive timeouts never cancel the layer's receive (on Python 3.11 a cancelled one
    can hang the feed until its next event): the next call waits on the same receive."""
    from channels.layers import get_channel_layer

    from musetalk_site.sse import ChannelReceiver

    layer = get_channel_layer()
    channel = await layer.new_channel()
    receiver = ChannelReceiver(layer, channel)
    try:
        assert await receiver.receive(0.2) is None
        first = receiver._pending
        assert first is not None and not first.done()  # still waiting, not cancelled
        await layer.send(channel, {"type": "event", "payload": {"n": 1}})
        message = await receiver.receive(5)
        assert message == {"type": "event", "payload": {"n": 1}}
        assert first.done() and receiver._pending is None
    finally:
        receiver.close()


@pytest.mark.asyncio
async def test_fifty_idle_followers_all_get_their_keep_alive_turn(redis_server):
    from channels.layers import get_channel_layer

    from musetalk_site.sse import ChannelReceiver

    layer = get_channel_layer()
    receivers = [ChannelReceiver(layer, await layer.new_channel()) for _ in range(50)]
    try:
        for _ in range(3):
            # every follower times out each round (nothing is sent); none hangs on
            results = await asyncio.wait_for(
                asyncio.gather(*(r.receive(0.3) for r in receivers)), timeout=30
            )
            assert results == [None] * 50
    finally:
        for receiver in receivers:
            receiver.close()
