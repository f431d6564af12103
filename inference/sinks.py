"""Where blended frames go: the engine's core yields frames, a sink packages them.

The scheduler (:mod:`inference.scheduler`) hands every stream's frames to its sink in order,
one call at a time, on a thread of the delivery pool (never on the model thread). A sink owns
everything about packaging: the x264 preset, the GOP rule, the audio track.

- :class:`Mp4FileSink`: one whole H.264 + AAC MP4, written atomically (``generate_file``).
- :class:`ChunkSink`: playable MP4 chunks of ``chunk_seconds`` with their audio, announced as
  each one is written (SSE/MSE and HLS live streams), and optionally the utterance's whole
  audio as one continuous AAC track for the HLS segmenter.
- :class:`QueueSink`: frames handed to a thread that iterates them (``generate``).
- :class:`FrameSink`: each frame to a callable as it is made (WebRTC and other frame feeds).
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from inference.layout import CHUNK_NAME
from inference.media import AUDIO_INPUT_RATE as SAMPLE_RATE
from inference.media import Mp4Writer, write_audio_track

# x264 preset of live chunks: "veryfast" costs a third of the default "medium" per frame
# (bench: 7 vs 20 CPU ms at 576x768) for ~10% more bytes at the same quality; a live stream
# is bound by the CPU next to the GPU. Whole videos keep "medium".
LIVE_PRESET = "veryfast"


@dataclass
class StreamResult:
    """What one stream did, once every frame reached its sink."""

    frames: int
    repeated_frames: int
    output: Any
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Frame:
    """One blended output frame of an utterance.

    ``index`` counts from 0 in the utterance; it is shown at ``index / fps`` seconds and goes
    with the 16 kHz audio samples ``[audio_start, audio_end)``. ``repeated`` marks a frame the
    scheduler did not generate because the stream was behind its playback clock: it is a copy
    of the last generated frame (the audio is never dropped).
    """

    index: int
    image: np.ndarray | None  # (H, W, 3) uint8 BGR; None when only ``yuv`` was made
    fps: int
    audio_start: int
    audio_end: int
    repeated: bool = False
    # planar I420 (H'*3//2, W'), H'/W' rounded up to even: the frame as blended and
    # converted on the device, which encoders take without another conversion
    yuv: np.ndarray | None = None
    size: tuple[int, int] = (0, 0)  # (width, height) of the frame

    @property
    def pts_s(self) -> float:
        return self.index / self.fps

    def bgr(self) -> np.ndarray:
        """The frame as ``(H, W, 3)`` uint8 BGR (converted from ``yuv`` when needed)."""
        if self.image is not None:
            return self.image
        assert self.yuv is not None  # a frame holds one or the other
        width, height = self.size
        return cv2.cvtColor(self.yuv, cv2.COLOR_YUV2BGR_I420)[:height, :width]

    def i420(self) -> np.ndarray:
        """The frame as planar I420 ``(H'*3//2, W')``, H'/W' the size rounded down to even
        (the device-made planes as they are; otherwise converted from BGR)."""
        if self.yuv is not None:
            return self.yuv
        image = self.bgr()
        height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        return cv2.cvtColor(image[:height, :width], cv2.COLOR_BGR2YUV_I420)


def write_frame(writer: Mp4Writer, frame: Frame) -> None:
    """Encode ``frame`` with ``writer``: its I420 planes as they are when it has them."""
    if frame.yuv is not None:
        writer.write_yuv420p(frame.yuv)
    else:
        writer.write(frame.bgr())


def audio_bounds(first_frame: int, count: int, fps: int) -> tuple[int, int]:
    """The audio samples ``[start, end)`` that go with frames ``[first, first + count)``."""
    start = round(first_frame * SAMPLE_RATE / fps)
    end = round((first_frame + count) * SAMPLE_RATE / fps)
    return start, end


class Sink(Protocol):
    """Receives one stream's frames in order, from one thread at a time."""

    def write(self, frame: Frame) -> bool:
        """Take the next frame; False asks the scheduler to stop the stream (nobody listens)."""
        ...

    def close(self) -> Any:
        """Every frame was written; returns what the stream made (a path, a count)."""
        ...

    def abort(self, error: BaseException | None) -> None:
        """The stream stopped early (``error`` None: cancelled); drop anything unfinished."""
        ...

    def backlog(self) -> int:
        """Frames written but not yet taken by a slower consumer (0 for sinks that finish
        their work inside ``write``); counted against the stream's window."""
        ...


@dataclass(frozen=True)
class Chunk:
    """One encoded chunk: frames ``[first_frame, first_frame + frame_count)`` of the utterance.

    ``repeated_frames`` counts frames of the chunk that repeat an earlier one (the stream was
    degraded to keep its playback clock).
    """

    index: int
    path: Path
    first_frame: int
    frame_count: int
    duration_s: float
    total_chunks: int
    repeated_frames: int = 0


class Mp4FileSink:
    """A whole H.264 + AAC MP4 of the utterance, renamed into place once complete."""

    def __init__(
        self,
        path: str | Path,
        *,
        fps: int,
        size: tuple[int, int],
        samples: np.ndarray,
        total: int,
        crf: int = 18,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        width, height = size
        self.path = Path(path)
        self.total = total
        self.count = 0
        self._progress = progress
        self._writer = Mp4Writer(
            self.path, fps=fps, width=width, height=height, audio=samples, crf=crf
        )

    def write(self, frame: Frame) -> bool:
        write_frame(self._writer, frame)
        self.count += 1
        if self._progress is not None:
            self._progress(self.count, self.total)
        return True

    def close(self) -> Path:
        return self._writer.close()

    def abort(self, error: BaseException | None) -> None:
        self._writer.abort()

    def backlog(self) -> int:
        return 0


class ChunkSink:
    """Playable chunks of ``per_chunk`` frames (the last may be shorter), each with its
    audio, handed to ``on_chunk`` the moment it is written.

    Chunk k holds frames [k*F, (k+1)*F) and the matching audio samples, so the chunks play
    back to back with no gap; each carries real audio around its edges (see
    :class:`inference.media.Mp4Writer`'s ``audio_context``). With ``audio_track`` (a file
    name) the utterance's whole audio is written to ``out_dir`` as one AAC track before the
    first chunk is announced. ``on_chunk`` returning False stops the stream.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        fps: int,
        size: tuple[int, int],
        samples: np.ndarray,
        total: int,
        per_chunk: int,
        on_chunk: Callable[[Chunk], bool],
        crf: int = 18,
        name: str = CHUNK_NAME,
        audio_track: str | None = None,
    ) -> None:
        if per_chunk < 1:
            raise ValueError(f"per_chunk must be >= 1, got {per_chunk}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.size = size
        self.samples = samples
        self.total = total
        self.per_chunk = per_chunk
        self.total_chunks = -(-total // per_chunk)
        self.crf = crf
        self.name = name
        self.chunks_written = 0
        self._on_chunk = on_chunk
        self._audio_track = audio_track
        self._writer: Mp4Writer | None = None
        self._first = 0
        self._repeated = 0

    def write(self, frame: Frame) -> bool:
        if self._writer is None:
            self._open(frame.index)
        assert self._writer is not None
        write_frame(self._writer, frame)
        self._repeated += int(frame.repeated)
        if self._writer.frames_written < min(self.per_chunk, self.total - self._first):
            return True
        return self._finish_chunk()

    def _open(self, first: int) -> None:
        if self._audio_track is not None:
            # ~15 ms per second of audio, once, before the first chunk is announced
            write_audio_track(
                self.out_dir / self._audio_track, self.samples, seconds=self.total / self.fps
            )
            self._audio_track = None
        count = min(self.per_chunk, self.total - first)
        start, end = audio_bounds(first, count, self.fps)
        width, height = self.size
        self._first = first
        self._repeated = 0
        self._writer = Mp4Writer(
            self.out_dir / self.name.format(first // self.per_chunk + 1),
            fps=self.fps,
            width=width,
            height=height,
            audio=self.samples[start:end],
            audio_context=(self.samples[:start], self.samples[end:]),
            crf=self.crf,
            tune="zerolatency",
            preset=LIVE_PRESET,
            gop=2 * self.fps,  # a key frame at least every 2 s (Apple's HLS spec 1.13)
        )

    def _finish_chunk(self) -> bool:
        assert self._writer is not None
        count = self._writer.frames_written
        path = self._writer.close()
        self._writer = None
        chunk = Chunk(
            index=self._first // self.per_chunk,
            path=path,
            first_frame=self._first,
            frame_count=count,
            duration_s=count / self.fps,
            total_chunks=self.total_chunks,
            repeated_frames=self._repeated,
        )
        self.chunks_written += 1
        return self._on_chunk(chunk)

    def close(self) -> int:
        return self.chunks_written

    def abort(self, error: BaseException | None) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def backlog(self) -> int:
        return 0


class QueueSink:
    """Frames for a thread that iterates them (:meth:`get`); the queue is unbounded, the
    scheduler's window (with :meth:`backlog`) bounds it."""

    END = object()

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._written = 0
        self._taken = 0

    def write(self, frame: Frame) -> bool:
        self._written += 1
        self._queue.put(frame)
        return True

    def close(self) -> int:
        self._queue.put(self.END)
        return self._written

    def abort(self, error: BaseException | None) -> None:
        self._queue.put(error if error is not None else self.END)

    def backlog(self) -> int:
        return self._written - self._taken

    def get(self, timeout: float) -> Any:
        """The next frame, :attr:`END`, or the exception that stopped the stream; raises
        ``queue.Empty`` after ``timeout`` seconds."""
        item = self._queue.get(timeout=timeout)
        if isinstance(item, Frame):
            self._taken += 1
        return item


class FrameSink:
    """Each frame to ``on_frame`` as it is made; ``on_frame`` returning False stops."""

    def __init__(
        self,
        on_frame: Callable[[Frame], bool],
        on_end: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self._on_frame = on_frame
        self._on_end = on_end
        self.count = 0

    def write(self, frame: Frame) -> bool:
        self.count += 1
        return self._on_frame(frame)

    def close(self) -> int:
        if self._on_end is not None:
            self._on_end(None)
        return self.count

    def abort(self, error: BaseException | None) -> None:
        if self._on_end is not None:
            self._on_end(error)

    def backlog(self) -> int:
        return 0
