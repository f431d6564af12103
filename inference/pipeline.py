"""The resident MuseTalk engine: one object, models loaded once, every way to generate.

``Engine.from_config`` loads the models, the face backend, the avatar cache, the memory budget
and the scheduler. ``prepare`` turns a video into an avatar folder. Generation is a stream in
the scheduler (:mod:`inference.scheduler`), which batches the frames of every open stream on one
model thread, plus a sink (:mod:`inference.sinks`) that packages them:

- ``generate``: the blended frames, to a caller that iterates them;
- ``generate_file``: one whole MP4 (a whole-video job, served after the live streams);
- ``stream_chunks`` / ``generate_chunks``: playable chunks as soon as their frames exist.

Silence: the model runs on every frame, silent stretches included (the model closes the
mouth on silent features, as trained); frames are never dropped, so audio and video stay
aligned frame for frame (a stream behind its playback clock repeats frames instead).
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Callable, Generator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.accel import AccelOptions, apply_accel, warm, warm_sizes
from inference.audio import (
    AudioFeatures,
    extract_audio_features,
    frame_count,
    load_audio,
)
from inference.avatar_store import MANIFEST, AvatarManifest, PreparedAvatar, load_avatar
from inference.blending import blend_face
from inference.budget import (
    STAGE_GENERATE,
    STAGE_PREPARE,
    GPUMemoryBudget,
    default_budget_bytes,
    estimate_batch_bytes,
    max_batch_that_fits,
)
from inference.cache import AvatarCache
from inference.config import EngineConfig, GenerateConfig, PrepareConfig
from inference.errors import InferenceError, StreamCancelled
from inference.faces import FaceBackend, select_backend
from inference.layout import CHUNK_NAME
from inference.models import MuseTalkModels, load_models
from inference.preparation import prepare_avatar as _prepare_avatar
from inference.scheduler import JOB, LIVE, Scheduler, Stream
from inference.sinks import (
    Chunk,
    ChunkSink,
    Frame,
    FrameSink,
    Mp4FileSink,
    QueueSink,
    Sink,
    StreamResult,
)

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (frames done, frames total)
Cancelled = Callable[[], bool]
# The largest model batch: on CUDA the UNet + VAE keep gaining up to ~64 frames (bench); on
# CPU the VAE decoder's per-frame cost rises past batch 4 (ENVIRONMENT.md), so a batch there
# is decoded in slices of 4 and more than 8 frames only add latency.
MAX_BATCH_CUDA = 48
MAX_BATCH_CPU = 8


@dataclass(frozen=True)
class GenerationResult:
    path: Path
    frame_count: int
    fps: int
    duration_s: float
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Cached:
    avatar: PreparedAvatar
    version: tuple[int, int]  # manifest inode + mtime: a re-prepared avatar is reloaded


class Engine:
    """The MuseTalk v1.5 pipeline resident in one worker process."""

    def __init__(
        self,
        models: MuseTalkModels,
        face_backend: FaceBackend,
        *,
        cache_max_bytes: int = 2 << 30,
        cache_ttl_seconds: float = 1800.0,
        budget_bytes: int = 0,
        blend_workers: int = 2,
        delivery_workers: int = 0,
        prefetch_batches: int = 2,
        decode_batch_size: int | None = None,
        max_batch: int = 0,
        device_blend: bool | None = None,
        degrade: bool = True,
    ) -> None:
        self.models = models
        cuda = models.device.type == "cuda"
        # The VAE decoder is 78% of the work. On CPU its per-frame cost rises past batch 4
        # (ENVIRONMENT.md), so decode in slices there; on CUDA decode the whole batch.
        if decode_batch_size is None:
            decode_batch_size = 0 if cuda else 4
        self.decode_batch_size = decode_batch_size
        self.face_backend = face_backend
        self.prefetch_batches = prefetch_batches
        self.cache: AvatarCache[_Cached] = AvatarCache(
            max_bytes=cache_max_bytes,
            ttl_seconds=cache_ttl_seconds,
            loader=self._load_avatar,
            sizeof=lambda cached: cached.avatar.nbytes(),
        )
        self.cache.start()
        device = str(models.device)
        self.budget = GPUMemoryBudget(total_bytes=budget_bytes or default_budget_bytes(device))
        limit = max_batch or (MAX_BATCH_CUDA if cuda else MAX_BATCH_CPU)
        fits = max_batch_that_fits(
            available_bytes=self.budget.total_bytes,
            dtype_bytes=self._dtype_bytes,
            profile=models.profile,
            limit=limit,
        )
        # Encoding (x264) and sink work run on the delivery pool, one thread per core.
        cores = os.cpu_count() or 2
        self.scheduler = Scheduler(
            models,
            budget=self.budget,
            max_batch=max(1, fits),
            decode_batch_size=decode_batch_size,
            blend=self._blend,
            blend_workers=blend_workers,
            delivery_workers=delivery_workers or max(2, cores),
            # on a CPU the tensor paste-back is slower than OpenCV's (bench/results/blend-cpu.md)
            device_blend=cuda if device_blend is None else device_blend,
            degrade=degrade,
        )

    @classmethod
    def from_config(
        cls,
        config: EngineConfig,
        *,
        cache_max_bytes: int = 2 << 30,
        cache_ttl_seconds: float = 1800.0,
        budget_bytes: int = 0,
        max_batch: int = 0,
        degrade: bool = True,
    ) -> Engine:
        """Load the models for ``config.profile`` and the face backend, once."""
        models = load_models(config)
        if models.is_random:
            logger.warning(
                "!!! model profile %s: RANDOM WEIGHTS, output is not real lip-sync !!!",
                config.profile,
            )
        return cls(
            models,
            select_backend(Path(config.models_dir), config.device),
            cache_max_bytes=cache_max_bytes,
            cache_ttl_seconds=cache_ttl_seconds,
            budget_bytes=budget_bytes,
            max_batch=max_batch,
            degrade=degrade,
        )

    def close(self) -> None:
        self.scheduler.close()
        self.cache.close()

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: models, face backend, cache and budget state."""
        stats = self.cache.stats()
        usage = self.budget.usage()
        entries = {key: self.cache.entry_info(key) for key in self.cache.keys()}
        return {
            **self.models.describe(),
            "face_backend": self.face_backend.name,
            "cache": {
                "entries": {key: info for key, info in entries.items() if info is not None},
                "bytes": stats.bytes,
                "max_bytes": stats.max_bytes,
                "hits": stats.hits,
                "misses": stats.misses,
                "evictions": stats.evictions_total,
            },
            "budget": {"total": usage.total, "reserved": usage.reserved, "peak": usage.peak},
            "capacity": self.capacity(),
        }

    @property
    def _dtype_bytes(self) -> int:
        return torch.finfo(self.models.dtype).bits // 8

    # -- avatars -------------------------------------------------------------------------------

    def prepare(
        self,
        video_path: str | Path,
        out_dir: str | Path,
        *,
        config: PrepareConfig,
        progress: Callable[[int, str], None] | None = None,
    ) -> AvatarManifest:
        """Prepare an avatar folder from a video (written atomically), then drop any cached copy."""
        estimate = estimate_batch_bytes(
            batch_size=config.batch_size,
            dtype_bytes=self._dtype_bytes,
            profile=self.models.profile,
            stage=STAGE_PREPARE,
        )
        with self.budget.reserve(min(estimate, self.budget.total_bytes), label="prepare"):
            manifest = _prepare_avatar(
                video_path,
                out_dir,
                vae=self.models.vae,
                face_backend=self.face_backend,
                config=config,
                progress=progress,
                model_info=self.models.describe(),
            )
        self.evict(out_dir)
        return manifest

    def _load_avatar(self, key: str) -> _Cached:
        version = _manifest_version(Path(key))
        avatar = load_avatar(key, device=self.models.device, dtype=self.models.dtype)
        return _Cached(avatar=avatar, version=version)

    def avatar(self, avatar_dir: str | Path) -> PreparedAvatar:
        """The prepared avatar, from the cache when its files have not changed since."""
        key = str(Path(avatar_dir))
        cached = self.cache.get(key)
        if cached.version != _manifest_version(Path(key)):
            self.cache.evict(key)
            cached = self.cache.get(key)
        return cached.avatar

    def warm(self, avatar_dir: str | Path) -> None:
        self.avatar(avatar_dir)

    def evict(self, avatar_dir: str | Path) -> bool:
        return self.cache.evict(str(Path(avatar_dir)))

    # -- generation ----------------------------------------------------------------------------

    def audio_features(self, samples: np.ndarray, *, config: GenerateConfig) -> AudioFeatures:
        return extract_audio_features(
            self.models,
            samples,
            config.fps,
            left=config.audio_padding_left,
            right=config.audio_padding_right,
        )

    def open_stream(
        self,
        avatar_dir: str | Path,
        audio: str | Path | np.ndarray,
        *,
        config: GenerateConfig,
        sink: Callable[[PreparedAvatar, np.ndarray, int], Sink],
        kind: str = LIVE,
        cancelled: Cancelled | None = None,
        label: str = "",
        wait_for_room: bool = False,
        cycle_start: int = 0,
        head_frames: int = 0,
    ) -> Stream:
        """Open a stream of T = floor(seconds * fps) frames in the scheduler (spec §5.4) and
        return at once; ``sink(avatar, samples, T)`` builds where its frames go.
        ``cycle_start``: the idle-loop position its frame 0 shows (a live stream that picks up
        where the idle loop on screen is; 0: the loop's start). ``head_frames``: its first
        frames, made in as few batches as possible (see ``Scheduler.open``).

        ``audio`` is a file or float32 16 kHz mono samples. ``cancelled()`` is asked every
        quarter second off the model thread; True (or an exception) stops the stream. The
        returned stream's ``done`` future resolves when the sink has taken every frame.
        """
        avatar = self.avatar(avatar_dir)
        samples = audio if isinstance(audio, np.ndarray) else load_audio(audio)
        total = frame_count(len(samples), config.fps)
        if total == 0:
            raise InferenceError("the audio is shorter than one video frame", permanent=True)
        per_chunk = round(config.chunk_seconds * config.fps) if config.chunk_seconds > 0 else 0
        if kind == LIVE:
            window = max(2 * config.batch_size, per_chunk + config.batch_size)
            lead = max(config.chunk_seconds, 0.5)
        else:
            window = self.prefetch_batches * max(config.batch_size, self.scheduler.max_batch)
            lead = 0.0
        return self.scheduler.open(
            avatar,
            samples,
            fps=config.fps,
            total=total,
            sink=sink(avatar, samples, total),
            features=lambda samples: self.audio_features(samples, config=config),
            kind=kind,
            window=window,
            lead_s=lead,
            batch_cap=config.batch_size,
            cancelled=cancelled,
            label=label,
            wait_for_room=wait_for_room,
            cycle_start=cycle_start,
            head_frames=head_frames,
        )

    def stream_frames(
        self,
        avatar_dir: str | Path,
        audio: str | Path | np.ndarray,
        *,
        config: GenerateConfig,
        on_frame: Callable[[Frame], bool],
        cycle_start: int = 0,
        cancelled: Cancelled | None = None,
        label: str = "",
        wait_for_room: bool = False,
        head_frames: int = 0,
    ) -> Stream:
        """A live stream whose frames go one by one to ``on_frame`` (on a delivery thread)
        as they are made, for a WebRTC track; returns at once. ``on_frame`` returning False
        stops the stream. ``head_frames``: the track's prebuffer, made in as few batches as
        possible whatever ``config.batch_size``."""
        return self.open_stream(
            avatar_dir,
            audio,
            config=config,
            sink=lambda _avatar, _samples, _total: FrameSink(on_frame),
            kind=LIVE,
            cancelled=cancelled,
            label=label,
            wait_for_room=wait_for_room,
            cycle_start=cycle_start,
            head_frames=head_frames,
        )

    def generate(
        self,
        avatar_dir: str | Path,
        audio: str | Path | np.ndarray,
        *,
        config: GenerateConfig,
        cancelled: Cancelled | None = None,
        timings: dict[str, float] | None = None,
        kind: str = JOB,
    ) -> Generator[np.ndarray, None, None]:
        """Yield the T blended frames ``(H, W, 3)`` uint8 BGR, in order.

        ``cancelled()`` is polled between frames; it may return True or raise to stop.
        """
        queue_sink = QueueSink()
        stream = self.open_stream(
            avatar_dir,
            audio,
            config=config,
            sink=lambda _avatar, _samples, _total: queue_sink,
            kind=kind,
        )
        try:
            while True:
                item = _next_item(queue_sink, cancelled)
                if item is QueueSink.END:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, StreamCancelled):
                        return
                    raise item
                yield item.bgr()
        finally:
            stream.cancel()
            if timings is not None and stream.done.done() and not stream.done.exception():
                timings.update(stream.done.result().timings)
            elif timings is not None:
                timings.update(stream.timings)

    def generate_file(
        self,
        avatar_dir: str | Path,
        audio: str | Path | np.ndarray,
        out_path: str | Path,
        *,
        config: GenerateConfig,
        progress: Progress | None = None,
        cancelled: Cancelled | None = None,
    ) -> GenerationResult:
        """Write an H.264 + AAC MP4 of T = floor(seconds * fps) frames (atomically)."""

        def file_sink(avatar: PreparedAvatar, samples: np.ndarray, total: int) -> Sink:
            height, width = avatar.frames[0].shape[:2]
            return Mp4FileSink(
                out_path,
                fps=config.fps,
                size=(width, height),
                samples=samples,
                total=total,
                crf=config.crf,
                progress=progress,
            )

        stream = self.open_stream(avatar_dir, audio, config=config, sink=file_sink, kind=JOB)
        result = _wait(stream, cancelled)
        if result is None:
            raise InferenceError("generation stopped before the last frame", permanent=True)
        return GenerationResult(
            path=Path(out_path),
            frame_count=result.frames,
            fps=config.fps,
            duration_s=result.frames / config.fps,
            timings=result.timings,
        )

    def stream_chunks(
        self,
        avatar_dir: str | Path,
        audio: str | Path | np.ndarray,
        out_dir: str | Path,
        *,
        config: GenerateConfig,
        on_chunk: Callable[[Chunk], bool],
        cancelled: Cancelled | None = None,
        name: str = CHUNK_NAME,
        audio_track: str | None = None,
        label: str = "",
        wait_for_room: bool = False,
    ) -> Stream:
        """A live stream whose frames become ``config.chunk_seconds`` chunks, each handed to
        ``on_chunk`` (on a delivery thread) the moment it is written; returns at once.

        ``on_chunk`` returning False stops the stream; ``wait_for_room``: it starts only once
        its fps fits beside the running live streams. With ``audio_track`` (a file name)
        the utterance's whole audio is also written to ``out_dir`` as one continuous AAC
        track before the first chunk (see :func:`inference.media.write_audio_track`).
        """
        if config.chunk_seconds <= 0:
            raise ValueError(f"chunk_seconds must be > 0, got {config.chunk_seconds}")

        return self.open_stream(
            avatar_dir,
            audio,
            config=config,
            sink=chunk_sink(out_dir, config, on_chunk, name=name, audio_track=audio_track),
            kind=LIVE,
            cancelled=cancelled,
            label=label,
            wait_for_room=wait_for_room,
        )

    def generate_chunks(
        self,
        avatar_dir: str | Path,
        audio: str | Path | np.ndarray,
        out_dir: str | Path,
        *,
        config: GenerateConfig,
        cancelled: Cancelled | None = None,
        name: str = CHUNK_NAME,
        audio_track: str | None = None,
    ) -> Generator[Chunk, None, None]:
        """:meth:`stream_chunks` for a caller that iterates: yields each chunk as it is
        written; closing the generator stops the stream."""
        handed: queue.Queue[Chunk] = queue.Queue()

        def on_chunk(chunk: Chunk) -> bool:
            handed.put(chunk)
            return True

        stream = self.stream_chunks(
            avatar_dir,
            audio,
            out_dir,
            config=config,
            on_chunk=on_chunk,
            name=name,
            audio_track=audio_track,
        )
        try:
            while True:
                try:
                    yield handed.get(timeout=0.1)
                    continue
                except queue.Empty:
                    pass
                if cancelled is not None and cancelled():
                    return
                if stream.done.done() and handed.empty():
                    error = stream.done.exception()
                    if error is not None and not isinstance(error, StreamCancelled):
                        raise error
                    return
        finally:
            stream.cancel()

    def capacity(self) -> dict[str, Any]:
        """Measured frames/s and load of the scheduler (see :mod:`inference.scheduler`)."""
        return self.scheduler.capacity()

    def accelerate(self, options: AccelOptions) -> list[int]:
        """Apply ``options`` (:mod:`inference.accel`) to the models and warm every batch
        size the scheduler will run; with compiled models or CUDA graphs its batches are then
        padded to those sizes. Call at boot, before any stream. Returns the warmed sizes."""
        apply_accel(self.models, options)
        sizes = warm_sizes(self.scheduler.max_batch)
        decode = sorted({min(n, self.decode_batch_size or n) for n in sizes})
        warm(self.models, sizes, decode)
        if options.compile or options.compile_vae or options.cuda_graphs:
            self.scheduler.padded_sizes = sizes
        return sizes

    def calibrate(self) -> dict[int, float]:
        """Measure the model's frames/s at batch 1 and at the largest batch (at boot)."""
        return self.scheduler.calibrate([1, self.scheduler.max_batch])

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every open stream has ended (a worker shutting down)."""
        return self.scheduler.wait_idle(timeout)

    def _blend(self, avatar: PreparedAvatar, i: int, face: np.ndarray) -> np.ndarray:
        j = avatar.frame_index(i)
        return blend_face(
            avatar.frames[j], face, avatar.face_boxes[j], avatar.masks[j], avatar.mask_boxes[j]
        )


SinkFactory = Callable[[PreparedAvatar, np.ndarray, int], Sink]


def chunk_sink(
    out_dir: str | Path,
    config: GenerateConfig,
    on_chunk: Callable[[Chunk], bool],
    *,
    name: str = CHUNK_NAME,
    audio_track: str | None = None,
) -> SinkFactory:
    """What builds a live stream's :class:`ChunkSink` once its avatar and length are known:
    ``config.chunk_seconds`` chunks of the avatar's frame size, each to ``on_chunk``."""

    def build(avatar: PreparedAvatar, samples: np.ndarray, total: int) -> Sink:
        height, width = avatar.frames[0].shape[:2]
        return ChunkSink(
            out_dir,
            fps=config.fps,
            size=(width, height),
            samples=samples,
            total=total,
            per_chunk=max(1, round(config.chunk_seconds * config.fps)),
            on_chunk=on_chunk,
            crf=config.crf,
            name=name,
            audio_track=audio_track,
        )

    return build


def _manifest_version(avatar_dir: Path) -> tuple[int, int]:
    try:
        stat = os.stat(avatar_dir / MANIFEST)
        return stat.st_ino, stat.st_mtime_ns
    except FileNotFoundError:
        raise InferenceError(
            f"{avatar_dir.name} is not a prepared avatar (no {MANIFEST})", permanent=True
        ) from None


def _next_item(frames: QueueSink, cancelled: Cancelled | None) -> Any:
    """The next handed-over item; ``cancelled()`` is polled while the model works."""
    while True:
        if cancelled is not None and cancelled():
            return QueueSink.END
        try:
            return frames.get(timeout=0.1)
        except queue.Empty:
            continue


def _wait(stream: Stream, cancelled: Cancelled | None) -> StreamResult | None:
    """Block until the stream ends, polling ``cancelled()``; None when it was cancelled."""
    try:
        while True:
            if cancelled is not None and cancelled():
                stream.cancel()
            try:
                return stream.done.result(timeout=0.1)
            except FutureTimeout:
                continue
            except StreamCancelled:
                return None
    finally:
        stream.cancel()


__all__ = ["Chunk", "Engine", "Frame", "GenerationResult", "LIVE", "JOB", "STAGE_GENERATE"]
