"""Live frames through the real Redis: in order, complete, to a reader that starts late or
waits for frames not made yet; the end (or the error) after the last frame."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
import redis
import redis.asyncio

from inference.sinks import Frame
from sessions_app.webrtc.tracks import LiveFrame
from sessions_app.webrtc.transport import (
    KEY_TTL_SECONDS,
    MAX_BACKLOG,
    FramePublisher,
    StreamEnd,
    frames_delete,
    frames_key,
    read_frames,
)

W, H = 64, 48


def _i420(level: int) -> bytes:
    return np.full(W * H * 3 // 2, level, dtype=np.uint8).tobytes()


async def _collect(url: str, request_id: str, trim: bool = True) -> list[LiveFrame | StreamEnd]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        return [item async for item in read_frames(client, request_id, block_ms=200, trim=trim)]
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_a_late_reader_gets_every_frame_in_order_then_the_end(redis_server: str) -> None:
    request_id = uuid.uuid4().hex
    publisher = FramePublisher(redis.Redis.from_url(redis_server), request_id)
    for i in range(30):
        publisher.frame(index=i, cycle=(i + 3) % 10, i420=_i420(i), width=W, height=H)
    publisher.end()
    assert publisher.client.xlen(frames_key(request_id)) == 31
    items = await _collect(redis_server, request_id, trim=False)
    frames, end = items[:-1], items[-1]
    assert [f.index for f in frames] == list(range(30))  # type: ignore[union-attr]
    assert [f.cycle for f in frames] == [(i + 3) % 10 for i in range(30)]  # type: ignore[union-attr]
    assert all(f.yuv == _i420(f.index) for f in frames)  # type: ignore[union-attr]
    assert end == StreamEnd(frames=30)
    ttl = publisher.client.ttl(frames_key(request_id))
    assert 0 < ttl <= KEY_TTL_SECONDS
    frames_delete(publisher.client, request_id)
    assert not publisher.client.exists(frames_key(request_id))


@pytest.mark.asyncio
async def test_a_reader_waits_for_frames_as_they_are_made(redis_server: str) -> None:
    request_id = uuid.uuid4().hex
    publisher = FramePublisher(redis.Redis.from_url(redis_server), request_id)
    reading = asyncio.ensure_future(_collect(redis_server, request_id))
    for i in range(5):
        await asyncio.sleep(0.05)
        await asyncio.to_thread(publisher.frame, index=i, cycle=i, i420=_i420(i), width=W, height=H)
    assert not reading.done()
    await asyncio.to_thread(publisher.end, "the worker died")
    items = await asyncio.wait_for(reading, 10)
    assert [f.index for f in items[:-1]] == list(range(5))  # type: ignore[union-attr]
    assert items[-1] == StreamEnd(frames=5, error="the worker died")


def test_a_picture_of_the_wrong_size_is_refused(redis_server: str) -> None:
    publisher = FramePublisher(redis.Redis.from_url(redis_server), uuid.uuid4().hex)
    with pytest.raises(ValueError, match="not an I420 picture of 64x48"):
        publisher.frame(index=0, cycle=0, i420=b"\0" * 10, width=W, height=H)


def test_a_frame_gives_its_i420_planes_at_an_even_size() -> None:
    image = np.zeros((49, 65, 3), dtype=np.uint8)
    image[..., 2] = 255  # red
    planes = Frame(0, image, 25, 0, 640).i420()
    assert planes.shape == (48 * 3 // 2, 64)
    assert abs(int(planes[:48].mean()) - 82) <= 2  # BT.601 limited-range Y of pure red
    device_made = np.full((72, 64), 90, dtype=np.uint8)
    assert Frame(0, None, 25, 0, 640, yuv=device_made, size=(64, 48)).i420() is device_made


@pytest.mark.asyncio
async def test_the_reader_trims_what_it_took_and_the_backlog_is_bounded(redis_server: str) -> None:
    request_id = uuid.uuid4().hex
    publisher = FramePublisher(redis.Redis.from_url(redis_server), request_id)
    for i in range(MAX_BACKLOG * 2):
        publisher.frame(index=i, cycle=0, i420=_i420(1), width=W, height=H)
    backlog = publisher.client.xlen(frames_key(request_id))
    assert MAX_BACKLOG <= backlog < MAX_BACKLOG * 1.5  # approximate trimming, in whole nodes
    publisher.end()
    items = await _collect(redis_server, request_id)
    assert items[-1] == StreamEnd(frames=MAX_BACKLOG * 2)
    assert publisher.client.xlen(frames_key(request_id)) <= 1
