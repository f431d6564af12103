"""The resident MuseTalk engine: one object, models loaded once, three ways to generate.

``Engine.from_config`` loads the models, the face backend, the avatar cache and the memory
budget. ``prepare`` turns a video into an avatar folder; ``generate`` yields blended frames in
order; ``generate_file`` writes an MP4; ``generate_chunks`` writes playable chunks as soon as
their frames exist.

Overlap: one producer thread runs the model (audio features, batched UNet at t=0, VAE
decode) and hands every decoded face to a blending pool; the caller consumes frames in
order (and encodes them) while the producer already runs the next batch. A bounded queue
keeps the producer at most ``prefetch_batches`` batches ahead.

Silence: the model runs on every frame, silent stretches included (the model closes the
mouth on silent features, as trained); frames are never skipped, so audio and video stay
aligned frame for frame.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.audio import (
    SAMPLE_RATE,
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
)
from inference.cache import AvatarCache
from inference.config import EngineConfig, GenerateConfig, PrepareConfig
from inference.errors import InferenceError
from inference.faces import FaceBackend, select_backend
from inference.layout import CHUNK_NAME
from inference.media import Mp4Writer, write_audio_track
from inference.models import MuseTalkModels, load_models, predict_latents
from inference.preparation import prepare_avatar as _prepare_avatar
from inference.vae import decode_latents

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (frames done, frames total)
Cancelled = Callable[[], bool]
_END = object()
# x264 preset of live chunks: "veryfast" costs a third of the default "medium" per frame
# (bench: 7 vs 20 CPU ms at 576x768) for ~10% more bytes at the same quality; a live stream
# is bound by the CPU next to the GPU. Whole videos keep "medium".
LIVE_PRESET = "veryfast"


@dataclass(frozen=True)
class GenerationResult:
    path: Path
    frame_count: int
    fps: int
    duration_s: float
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """One encoded chunk: frames ``[first_frame, first_frame + frame_count)`` of the utterance."""

    index: int
    path: Path
    first_frame: int
    frame_count: int
    duration_s: float
    total_chunks: int


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
        prefetch_batches: int = 2,
        decode_batch_size: int | None = None,
    ) -> None:
        self.models = models
        # The VAE decoder is 78% of the work. On CPU its per-frame cost rises past batch 4
        # (ENVIRONMENT.md), so decode in slices there; on CUDA decode the whole batch.
        if decode_batch_size is None:
            decode_batch_size = 0 if models.device.type == "cuda" else 4
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
        self._pool = ThreadPoolExecutor(max_workers=blend_workers, thread_name_prefix="blend")

    @classmethod
    def from_config(
        cls,
        config: EngineConfig,
        *,
        cache_max_bytes: int = 2 << 30,
        cache_ttl_seconds: float = 1800.0,
        budget_bytes: int = 0,
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
        )

    def close(self) -> None:
        self.cache.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

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

    def generate(
        self,
        avatar_dir: str | Path,
        audio: str | Path | np.ndarray,
        *,
        config: GenerateConfig,
        cancelled: Cancelled | None = None,
        timings: dict[str, float] | None = None,
    ) -> Generator[np.ndarray, None, None]:
        """Yield the T blended frames ``(H, W, 3)`` uint8 BGR, in order.

        ``audio`` is a file or float32 16 kHz mono samples. ``cancelled()`` is polled between
        frames; it may return True or raise to stop. T = floor(seconds * fps) (spec §5.4).
        """
        # 1. check inputs
        avatar = self.avatar(avatar_dir)
        samples = audio if isinstance(audio, np.ndarray) else load_audio(audio)
        # 2. audio features (T, 50, 384)
        started = time.perf_counter()
        features = self.audio_features(samples, config=config)
        if timings is not None:
            timings["audio_features_s"] = time.perf_counter() - started
        if features.frame_count == 0:
            raise InferenceError("the audio is shorter than one video frame", permanent=True)
        # 3. run the model in a producer thread; blend in the pool; yield in order
        yield from self._frames_in_order(avatar, features.chunks, config, cancelled, timings)

    def _frames_in_order(
        self,
        avatar: PreparedAvatar,
        chunks: torch.Tensor,
        config: GenerateConfig,
        cancelled: Cancelled | None,
        timings: dict[str, float] | None,
    ) -> Iterator[np.ndarray]:
        handoff: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch_batches * config.batch_size)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce,
            args=(avatar, chunks, config, handoff, stop, timings),
            name="musetalk-model",
            daemon=True,
        )
        producer.start()
        try:
            while True:
                item = _next_item(handoff, cancelled)
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item.result()
        finally:
            stop.set()
            _drain(handoff)
            producer.join(timeout=60)

    def _produce(
        self,
        avatar: PreparedAvatar,
        chunks: torch.Tensor,
        config: GenerateConfig,
        handoff: queue.Queue[Any],
        stop: threading.Event,
        timings: dict[str, float] | None,
    ) -> None:
        """Model thread: batches of (latents, audio) -> decoded faces -> blend futures, in order."""
        try:
            for start in range(0, chunks.shape[0], config.batch_size):
                if stop.is_set():
                    return
                indices = list(range(start, min(start + config.batch_size, chunks.shape[0])))
                faces = self._model_batch(avatar, chunks, indices, timings, stop)
                if stop.is_set():
                    return
                for i, face in zip(indices, faces, strict=True):
                    future = self._pool.submit(self._blend, avatar, i, face)
                    if not _put(handoff, future, stop):
                        return
            _put(handoff, _END, stop)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            _put(handoff, exc, stop)

    def _model_batch(
        self,
        avatar: PreparedAvatar,
        chunks: torch.Tensor,
        indices: list[int],
        timings: dict[str, float] | None,
        stop: threading.Event,
    ) -> np.ndarray:
        """UNet + VAE decode for output frames ``indices``: (B, 256, 256, 3) uint8 BGR.

        Returns early (an empty array) when the consumer stopped during the UNet step.
        """
        stored = [avatar.frame_index(i) for i in indices]
        estimate = estimate_batch_bytes(
            batch_size=len(indices), dtype_bytes=self._dtype_bytes, profile=self.models.profile
        )
        with self.budget.reserve(min(estimate, self.budget.total_bytes), label="generate"):
            latents = avatar.latents[stored]
            audio = chunks[indices[0] : indices[-1] + 1]
            t0 = time.perf_counter()
            predicted = predict_latents(self.models, latents, audio)
            t1 = time.perf_counter()
            if stop.is_set():
                return np.empty((0, 256, 256, 3), np.uint8)
            faces = self._decode(predicted)
            t2 = time.perf_counter()
        if timings is not None:
            timings["unet_s"] = timings.get("unet_s", 0.0) + (t1 - t0)
            timings["vae_decode_s"] = timings.get("vae_decode_s", 0.0) + (t2 - t1)
        return faces

    def _decode(self, predicted: torch.Tensor) -> np.ndarray:
        """VAE decode (B, 4, 32, 32) -> (B, 256, 256, 3) uint8 BGR, in slices on CPU."""
        step = self.decode_batch_size or predicted.shape[0]
        parts = [
            decode_latents(self.models.vae, predicted[start : start + step])
            for start in range(0, predicted.shape[0], step)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _blend(self, avatar: PreparedAvatar, i: int, face: np.ndarray) -> np.ndarray:
        j = avatar.frame_index(i)
        return blend_face(
            avatar.frames[j], face, avatar.face_boxes[j], avatar.masks[j], avatar.mask_boxes[j]
        )

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
        samples = audio if isinstance(audio, np.ndarray) else load_audio(audio)
        avatar = self.avatar(avatar_dir)
        height, width = avatar.frames[0].shape[:2]
        total = frame_count(len(samples), config.fps)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        count = 0
        with Mp4Writer(
            out_path, fps=config.fps, width=width, height=height, audio=samples, crf=config.crf
        ) as writer:
            for frame in self.generate(
                avatar_dir, samples, config=config, cancelled=cancelled, timings=timings
            ):
                writer.write(frame)
                count += 1
                if progress is not None:
                    progress(count, total)
            if count < total:
                raise InferenceError("generation stopped before the last frame", permanent=True)
        timings["total_s"] = time.perf_counter() - started
        return GenerationResult(
            path=Path(out_path),
            frame_count=count,
            fps=config.fps,
            duration_s=count / config.fps,
            timings=timings,
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
        """Encode ``config.chunk_seconds`` chunks as their frames are blended; yield each one.

        Chunk k holds frames [k*F, (k+1)*F) with F = round(chunk_seconds * fps) and the
        matching audio samples, so the chunks play back to back with no gap. With
        ``audio_track`` (a file name), the utterance's whole audio is also written to
        ``out_dir`` as one continuous AAC track before the first chunk (see
        :func:`inference.media.write_audio_track`).
        """
        if config.chunk_seconds <= 0:
            raise ValueError(f"chunk_seconds must be > 0, got {config.chunk_seconds}")
        samples = audio if isinstance(audio, np.ndarray) else load_audio(audio)
        avatar = self.avatar(avatar_dir)
        per_chunk = max(1, round(config.chunk_seconds * config.fps))
        total = frame_count(len(samples), config.fps)
        total_chunks = -(-total // per_chunk)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        # The track is encoded in the engine's pool next to the model (~15 ms per second of
        # audio, done before the first faces come to blend) and is ready before the first
        # chunk is announced.
        track: Future[Path] | None = None
        if audio_track:
            track = self._pool.submit(
                write_audio_track, out_dir / audio_track, samples, seconds=total / config.fps
            )
        frames = self.generate(avatar_dir, samples, config=config, cancelled=cancelled)
        try:
            for index in range(total_chunks):
                first = index * per_chunk
                count = min(per_chunk, total - first)
                path = out_dir / name.format(index + 1)
                if not self._write_chunk(path, frames, count, samples, first, config, avatar):
                    return
                if track is not None:
                    track.result()
                    track = None
                yield Chunk(index, path, first, count, count / config.fps, total_chunks)
        finally:
            frames.close()
            if track is not None:
                track.cancel()  # stopped before the first chunk: not needed (writes are atomic)

    def _write_chunk(
        self,
        path: Path,
        frames: Iterator[np.ndarray],
        count: int,
        samples: np.ndarray,
        first: int,
        config: GenerateConfig,
        avatar: PreparedAvatar,
    ) -> bool:
        """Encode the next ``count`` frames with their audio; False when generation stopped."""
        height, width = avatar.frames[0].shape[:2]
        start, end = _audio_bounds(first, count, config.fps)
        with Mp4Writer(
            path,
            fps=config.fps,
            width=width,
            height=height,
            audio=samples[start:end],
            audio_context=(samples[:start], samples[end:]),
            crf=config.crf,
            tune="zerolatency",
            preset=LIVE_PRESET,
            gop=2 * config.fps,  # a key frame at least every 2 s (Apple's HLS spec 1.13)
        ) as writer:
            for _ in range(count):
                frame = next(frames, None)
                if frame is None:
                    writer.abort()
                    return False
                writer.write(frame)
        return True


def _audio_bounds(first_frame: int, count: int, fps: int) -> tuple[int, int]:
    """The audio samples ``[start, end)`` that go with frames ``[first, first + count)``."""
    start = round(first_frame * SAMPLE_RATE / fps)
    end = round((first_frame + count) * SAMPLE_RATE / fps)
    return start, end


def _manifest_version(avatar_dir: Path) -> tuple[int, int]:
    try:
        stat = os.stat(avatar_dir / MANIFEST)
        return stat.st_ino, stat.st_mtime_ns
    except FileNotFoundError:
        raise InferenceError(
            f"{avatar_dir.name} is not a prepared avatar (no {MANIFEST})", permanent=True
        ) from None


def _next_item(handoff: queue.Queue[Any], cancelled: Cancelled | None) -> Any:
    """The next handed-over item; ``cancelled()`` is polled while the model works."""
    while True:
        if cancelled is not None and cancelled():
            return _END
        try:
            return handoff.get(timeout=0.1)
        except queue.Empty:
            continue


def _put(handoff: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put with backpressure; gives up (False) once the consumer has stopped."""
    while not stop.is_set():
        try:
            handoff.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _drain(handoff: queue.Queue[Any]) -> None:
    while True:
        try:
            item = handoff.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, Future):
            item.cancel()


__all__ = ["Chunk", "Engine", "GenerationResult", "STAGE_GENERATE"]
