"""A stand-in for the engine's live chunk stream, for the worker-side streaming services.

``stream_chunks`` hands ``total`` small chunk files to ``on_chunk`` one by one (asking
``cancelled()`` before each) on a thread of its own, like the scheduler's delivery threads,
and resolves the stream's ``done`` future the way the engine does. :func:`settled` waits for
the service to finish the utterance (it does so on its own thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from django.db import connections

from inference.errors import StreamCancelled
from inference.sinks import Chunk, StreamResult
from sessions_app.models import StreamRequest

FINAL = (
    StreamRequest.Status.COMPLETED,
    StreamRequest.Status.FAILED,
    StreamRequest.Status.INTERRUPTED,
)


class ChunkStream:
    def __init__(self) -> None:
        self.done: Future[StreamResult] = Future()
        self.timings: dict[str, float] = {}  # filled as the engine's scheduler does


class ChunkingEngine:
    def __init__(
        self,
        total: int = 3,
        *,
        seconds: float = 1.0,
        frames: int = 25,
        on_chunk: Callable[[int], None] | None = None,
        repeated: list[int] | None = None,
    ) -> None:
        self.total, self.seconds, self.frames, self.on_chunk = total, seconds, frames, on_chunk
        self.repeated = repeated or [0] * total  # repeated frames per chunk (degraded)
        self.config: Any = None
        self.audio_track: str | None = None
        self.wait_for_room = False

    def stream_chunks(
        self,
        avatar_dir: Any,
        audio: Any,
        out_dir: Path,
        *,
        config: Any,
        on_chunk: Callable[[Chunk], bool],
        cancelled: Callable[[], bool],
        audio_track: str | None = None,
        label: str = "",
        wait_for_room: bool = False,
    ) -> ChunkStream:
        self.config, self.audio_track = config, audio_track
        self.wait_for_room = wait_for_room
        out_dir.mkdir(parents=True, exist_ok=True)
        stream = ChunkStream()
        threading.Thread(
            target=self._run, args=(stream, out_dir, on_chunk, cancelled), daemon=True
        ).start()
        return stream

    def _run(
        self,
        stream: ChunkStream,
        out_dir: Path,
        on_chunk: Callable[[Chunk], bool],
        cancelled: Callable[[], bool],
    ) -> None:
        try:
            self._chunks(stream, out_dir, on_chunk, cancelled)
        finally:
            connections.close_all()  # this thread's own (the stop checks' queries)

    def _chunks(
        self,
        stream: ChunkStream,
        out_dir: Path,
        on_chunk: Callable[[Chunk], bool],
        cancelled: Callable[[], bool],
    ) -> None:
        stream.timings.update(audio_features_s=0.25, first_batch_s=0.5, first_batch_frames=5)
        for index in range(self.total):
            if index == 0:
                stream.timings["first_frame_s"] = 0.8
            if cancelled():
                stream.done.set_exception(StreamCancelled("cancelled"))
                return
            path = out_dir / f"chunk_{index + 1:04d}.mp4"
            path.write_bytes(b"mp4")
            chunk = Chunk(
                index,
                path,
                index * self.frames,
                self.frames,
                self.seconds,
                self.total,
                repeated_frames=self.repeated[index] if index < len(self.repeated) else 0,
            )
            if not on_chunk(chunk):
                stream.done.set_exception(StreamCancelled("stopped"))
                return
            if self.on_chunk:
                self.on_chunk(index)
        stream.timings["total_s"] = 2.5
        stream.done.set_result(
            StreamResult(self.total * self.frames, 0, self.total, dict(stream.timings))
        )


def settled(request: StreamRequest, timeout: float = 15.0) -> StreamRequest:
    """The request once the service has finished it (its status is final)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request.refresh_from_db()
        if request.status in FINAL:
            time.sleep(0.1)  # its last events are published right after the status
            return request
        time.sleep(0.02)
    raise AssertionError(f"stream {request.request_id} is still {request.status}")
