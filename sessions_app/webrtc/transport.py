"""Live frames from the worker to the process that owns the peer connection, one Redis Stream
per utterance (``XADD`` as each frame is made, ``XREAD`` in the owner).

Each entry holds one frame: its index in the utterance, the idle-loop position it shows, its
size and the I420 picture (``w*h*3/2`` bytes: 648 KiB at 576x768); the last entry says the
utterance ended (with the error, if it failed). Entries stay until the stream's key expires,
so a reader that starts late, or reconnects, reads from the first frame: nothing is lost or
reordered. Memory stays bounded: the reader trims what it has taken, and the stream keeps
about ``MAX_BACKLOG`` frames at most (a reader that far behind has lost its real time anyway).
``bench/webrtc.py`` measures what a frame costs on both sides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import redis
import redis.asyncio

from sessions_app.webrtc.tracks import LiveFrame

KEY_PREFIX = "webrtc:frames:"
KEY_TTL_SECONDS = 600  # an utterance's frames outlive any player that could still want them
MAX_BACKLOG = 250  # frames (10 s at 25 fps; 160 MB at 576x768), approximately
Reply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]  # XREAD's, undecoded


def frames_key(request_id: str) -> str:
    return f"{KEY_PREFIX}{request_id}"


@dataclass(frozen=True)
class StreamEnd:
    """The utterance is over: all its frames came before this; ``error`` when it failed."""

    frames: int
    error: str = ""


class FramePublisher:
    """The worker's side: ``frame`` for each frame in order, then ``end`` once."""

    def __init__(self, client: redis.Redis, request_id: str) -> None:
        self.client = client
        self.key = frames_key(request_id)
        self.count = 0

    def frame(self, *, index: int, cycle: int, i420: bytes, width: int, height: int) -> None:
        if len(i420) != width * height * 3 // 2:
            raise ValueError(f"{len(i420)} bytes is not an I420 picture of {width}x{height}")
        fields = {"i": index, "c": cycle, "w": width, "h": height, "yuv": i420}
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(self.key, fields, maxlen=MAX_BACKLOG, approximate=True)  # type: ignore[arg-type]
        if self.count == 0:
            pipe.expire(self.key, KEY_TTL_SECONDS)
        pipe.execute()
        self.count += 1

    def end(self, error: str = "") -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(self.key, {"end": self.count, "error": error})
        pipe.expire(self.key, KEY_TTL_SECONDS)
        pipe.execute()


async def read_frames(
    client: redis.asyncio.Redis,
    request_id: str,
    *,
    block_ms: int = 1000,
    after: str = "0-0",
    trim: bool = True,
) -> AsyncIterator[LiveFrame | StreamEnd]:
    """The utterance's frames in order from ``after`` (its start), then its ``StreamEnd``.
    Waits for frames not made yet; the caller stops it by leaving the loop (or cancelling).
    With ``trim``, entries read are removed (one reader per utterance)."""
    key = frames_key(request_id)
    last: str | bytes = after
    while True:
        reply = cast(Reply, await client.xread({key: last}, count=16, block=block_ms))
        if reply and trim:
            await client.xtrim(key, minid=reply[-1][1][-1][0])  # keeps the last one read
        for _, entries in reply or ():
            for entry_id, fields in entries:
                last = entry_id
                if b"end" in fields:
                    yield StreamEnd(int(fields[b"end"]), fields.get(b"error", b"").decode())
                    return
                yield LiveFrame(
                    index=int(fields[b"i"]),
                    cycle=int(fields[b"c"]),
                    width=int(fields[b"w"]),
                    height=int(fields[b"h"]),
                    yuv=fields[b"yuv"],
                )


def frames_delete(client: redis.Redis, request_id: str) -> None:
    client.delete(frames_key(request_id))
