"""The engine's core: one thread owns the models and batches frames across every stream.

A *stream* is one utterance being turned into frames: a prepared avatar, its audio features
and a :class:`~inference.sinks.Sink`. Streams are state here, not threads: any number may be
open at once, and each costs memory, not a thread.

Each step of the model thread builds **one** UNet + VAE batch from the frames the open streams
need next and runs it:

- live streams first, by earliest playback deadline (frame i of a stream that started at t0
  is due at ``t0 + lead_s + i / fps``), then whole-video jobs (after every live frame due
  within ``JOB_LIVE_HORIZON_S``); a job that waited ``JOB_MAX_WAIT_S`` gets a frame even
  when live streams are behind, so nothing starves;
- up to ``max_batch`` frames, and per stream at most its *window* of frames made but not yet
  taken by its sink (the memory bound and the backpressure of a slow consumer);
- a stream that ends, fails or is cancelled simply stops being picked.

Decoded faces go to the blending pool (on CUDA they are pasted back and converted to I420 on
the device instead: :mod:`inference.device_blend`); every stream's frames go to its sink in order
on the delivery pool (encoding happens there, in parallel across streams, off the model
thread). Audio features of a new stream are computed on a thread of their own, so a new
utterance never stalls the batches of the others.

Degradation: a live stream's playback clock starts when its first frame reaches its sink (a
player starts then). One whose next frame is already ``DEGRADE_AFTER_S`` past its deadline
generates only every 2nd (then 3rd) frame and repeats the last one in between; the audio is
untouched. Once it is ``RECOVER_AHEAD_S`` ahead again it steps back up. Sinks see it on the
frames (``Frame.repeated``).

Capacity: every step's model time is recorded by batch size; :meth:`Scheduler.capacity`
reports the sustained frames/s at the best batch size measured, the live demand (sum of the
active live streams' fps) and the work left, which the worker publishes with its heartbeat.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from inference.audio import AudioFeatures
from inference.avatar_store import PreparedAvatar
from inference.budget import GPUMemoryBudget, estimate_batch_bytes
from inference.device_blend import DeviceBlender, bgr_to_yuv420p
from inference.errors import InferenceError, StreamCancelled
from inference.models import MuseTalkModels, predict_latents
from inference.sinks import Frame, Sink, StreamResult, audio_bounds
from inference.vae import decode_latents, decode_latents_tensor

logger = logging.getLogger(__name__)

LIVE = "live"
JOB = "job"
JOB_LIVE_HORIZON_S = 2.0  # live frames due within this long go before whole-video jobs
JOB_MAX_WAIT_S = 1.0  # a whole-video job waits at most this long for a share of a batch
DEGRADE_AFTER_S = 0.25  # behind by this much: generate fewer frames
RECOVER_AHEAD_S = 0.5  # ahead by this much: generate more again
MAX_STRIDE = 3  # at worst every 3rd frame is generated
STRIDE_HOLD_S = 1.0  # the degradation level changes at most once a second per stream
CANCEL_POLL_S = 0.25  # how often the watcher asks each stream whether it was cancelled
RATE_SMOOTHING = 0.3  # weight of a new measurement in the frames/s average


@dataclass
class _Slot:
    """One frame on its way: a blend future, or a repeat of the frame before it."""

    future: Future[np.ndarray] | None
    repeated: bool = False


_REPEAT = _Slot(None, repeated=True)


class Stream:
    """One utterance in the scheduler (state, not a thread). Created by
    :meth:`Scheduler.open`; ``done`` resolves with a :class:`StreamResult` or the error."""

    def __init__(
        self,
        *,
        ident: int,
        kind: str,
        avatar: PreparedAvatar,
        samples: np.ndarray,
        fps: int,
        total: int,
        sink: Sink,
        window: int,
        lead_s: float,
        batch_cap: int,
        cancelled: Callable[[], bool] | None,
        label: str,
        cycle_start: int = 0,
        head_frames: int = 0,
    ) -> None:
        self.ident = ident
        self.cycle_start = cycle_start  # output frame i shows loop position cycle_start + i
        self.kind = kind
        self.avatar = avatar
        self.samples = samples
        self.fps = fps
        self.total = total
        self.sink = sink
        self.window = max(1, window, head_frames)
        self.lead_s = lead_s
        self.batch_cap = max(1, batch_cap)
        self.head_frames = head_frames  # made as few batches as possible (a prebuffer)
        self.cancelled = cancelled
        self.label = label
        self.done: Future[StreamResult] = Future()
        self.opened_at = time.monotonic()
        self.timings: dict[str, float] = {}
        self.features: torch.Tensor | None = None
        self.started_at = 0.0  # when its features were ready (its clock's origin)
        self.next_index = 0  # the next frame to give the model
        self.delivered = 0  # frames handed to the sink
        self.repeated = 0
        self.stride = 1
        self.stride_changed_at = 0.0
        self.last_served = 0.0
        self.slots: dict[int, _Slot] = {}
        self.lock = threading.Lock()
        self.pumping = False
        self.dirty = False
        self.last_image: np.ndarray | None = None
        self.ended = False
        self.cancel_checked = 0.0
        self.end_reason: tuple[BaseException | None, bool] = (None, False)
        self.wait_for_room = False
        self.pending = False  # a live stream waiting for room (see Scheduler._admit)

    # -- for callers -----------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the stream: no new frames are made; its sink is aborted."""
        self._scheduler_end(None, cancelled=True)

    @property
    def seconds_left(self) -> float:
        return max(0, self.total - self.next_index) / self.fps

    # -- for the scheduler -----------------------------------------------------------------

    def deadline(self, index: int) -> float:
        """When frame ``index`` is due: before the first frame, counted from the stream's
        start (its priority); after it, on the playback clock that began then."""
        return self.started_at + self.lead_s + index / self.fps

    def batch_limit(self) -> int:
        """Its frames in the next batch, at most: ``batch_cap``, or what is left of its
        head frames when more (a player waits for all of those before it shows any)."""
        return max(self.batch_cap, self.head_frames - self.next_index)

    def in_flight(self) -> int:
        return self.next_index - self.delivered + self.sink.backlog()

    def wants_frames(self) -> bool:
        return (
            not self.ended
            and not self.pending
            and self.features is not None
            and self.next_index < self.total
            and self.in_flight() < self.window
        )

    _end_hook: Callable[[Stream, BaseException | None, bool], None] | None = None

    def _scheduler_end(self, error: BaseException | None, *, cancelled: bool = False) -> None:
        if self._end_hook is not None:
            self._end_hook(self, error, cancelled)


@dataclass
class _Rate:
    """Measured model frames/s at one batch size (exponentially smoothed)."""

    frames_per_s: float
    samples: int = 1


class Scheduler:
    """Owns the models: one thread runs every UNet + VAE batch for all open streams."""

    def __init__(
        self,
        models: MuseTalkModels,
        *,
        budget: GPUMemoryBudget,
        max_batch: int,
        decode_batch_size: int,
        blend: Callable[[PreparedAvatar, int, np.ndarray], np.ndarray],
        blend_workers: int,
        delivery_workers: int,
        device_blend: bool = False,
        degrade: bool = True,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.models = models
        self.budget = budget
        self.max_batch = max_batch
        self.decode_batch_size = decode_batch_size
        self._blend_fn = blend
        # Paste-back and colour conversion on the device (CUDA): the CPU only encodes.
        self.device_blend = device_blend
        self.degrade = degrade  # repeat frames of live streams behind their clock
        # With compiled models or CUDA graphs, batches are padded to these warmed sizes.
        self.padded_sizes: list[int] = []
        self._blenders: dict[int, tuple[PreparedAvatar, DeviceBlender]] = {}
        self._blend_pool = ThreadPoolExecutor(blend_workers, thread_name_prefix="blend")
        self._delivery_pool = ThreadPoolExecutor(delivery_workers, thread_name_prefix="deliver")
        self._audio_pool = ThreadPoolExecutor(1, thread_name_prefix="audio-features")
        self._cond = threading.Condition()
        self._streams: dict[int, Stream] = {}
        self._ids = itertools.count(1)
        self._rates: dict[int, _Rate] = {}
        self._closed = False
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._steps = 0
        self._frames_made = 0
        self._holds = 0
        self._costs: dict[str, float] = {}
        self._cost_lock = threading.Lock()
        self._cores = max(1, os.cpu_count() or 1)
        self._blend_workers = blend_workers
        self._delivery_workers = delivery_workers
        # (stream id, frame index) of the last steps' batches, newest last
        self.step_log: deque[tuple[tuple[int, int], ...]] = deque(maxlen=256)

    # -- lifecycle ---------------------------------------------------------------------------

    def _ensure_threads(self) -> None:
        with self._cond:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="musetalk-model", daemon=True)
            self._thread.start()
            self._watcher = threading.Thread(
                target=self._watch, name="musetalk-cancel-watch", daemon=True
            )
            self._watcher.start()

    def close(self) -> None:
        """Cancel every stream and stop the threads."""
        with self._cond:
            self._closed = True
            streams = list(self._streams.values())
            self._cond.notify_all()
        for stream in streams:
            stream.cancel()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for pool in (self._audio_pool, self._blend_pool, self._delivery_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    @contextmanager
    def held(self) -> Iterator[None]:
        """No batch starts while held (streams opened meanwhile start together after)."""
        with self._cond:
            self._holds += 1
        try:
            yield
        finally:
            with self._cond:
                self._holds -= 1
                self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no stream is open (a worker shutting down lets them finish)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._streams:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=min(left, 0.5))
        return True

    # -- streams -----------------------------------------------------------------------------

    def open(
        self,
        avatar: PreparedAvatar,
        samples: np.ndarray,
        *,
        fps: int,
        total: int,
        sink: Sink,
        features: Callable[[np.ndarray], AudioFeatures],
        kind: str = LIVE,
        window: int = 16,
        lead_s: float = 1.0,
        batch_cap: int = 0,
        cancelled: Callable[[], bool] | None = None,
        label: str = "",
        wait_for_room: bool = False,
        cycle_start: int = 0,
        head_frames: int = 0,
    ) -> Stream:
        """Start a stream of ``total`` frames; ``features(samples)`` is computed on the audio
        thread, then its frames join the batches. Returns at once.

        ``window``: frames made but not yet taken by the sink, at most; ``lead_s``: how long
        after its start its frame 0 is due; ``batch_cap``: its frames in one batch, at most
        (0: up to ``max_batch``); ``wait_for_room``: a live stream that starts only once its
        fps fits beside the running live streams (one queued beyond capacity); others start
        at once (the web side admitted them); ``head_frames``: its first frames, made in as
        few batches as ``max_batch`` allows even past ``batch_cap`` (a player's prebuffer:
        the first frame shows only once they are all there)."""
        if kind not in (LIVE, JOB):
            raise ValueError(f"kind must be {LIVE!r} or {JOB!r}, got {kind!r}")
        stream = Stream(
            ident=next(self._ids),
            kind=kind,
            avatar=avatar,
            samples=samples,
            fps=fps,
            total=total,
            sink=sink,
            window=window,
            lead_s=lead_s,
            batch_cap=batch_cap or self.max_batch,
            cancelled=cancelled,
            label=label or f"stream-{kind}",
            cycle_start=cycle_start,
            head_frames=max(0, head_frames),
        )
        stream._end_hook = self._end
        stream.wait_for_room = wait_for_room and kind == LIVE
        with self._cond:
            if self._closed:
                raise InferenceError("the engine is shutting down", permanent=False)
            self._streams[stream.ident] = stream
        self._ensure_threads()
        self._audio_pool.submit(self._prepare_features, stream, features)
        return stream

    def _prepare_features(
        self, stream: Stream, compute: Callable[[np.ndarray], AudioFeatures]
    ) -> None:
        if stream.ended:
            return
        started = time.perf_counter()
        try:
            features = compute(stream.samples)
        except BaseException as exc:
            self._end(stream, exc, False)
            return
        stream.timings["audio_features_s"] = time.perf_counter() - started
        if features.frame_count < stream.total:
            self._end(stream, InferenceError("audio features are shorter than the video"), False)
            return
        with self._cond:
            stream.features = features.chunks
            stream.started_at = stream.last_served = time.monotonic()
            stream.pending = stream.wait_for_room and not self._has_room(stream)
            if stream.pending:
                logger.info("%s: waiting for room (live demand at capacity)", stream.label)
            self._cond.notify_all()

    def _end(self, stream: Stream, error: BaseException | None, cancelled: bool) -> None:
        """End a stream once. Its sink is closed or aborted by whoever delivers to it: at
        once when no delivery is under way, else by the delivering thread when it sees the
        end (a sink is never used by two threads at a time)."""
        with stream.lock:
            if stream.ended:
                return
            stream.ended = True
            stream.end_reason = (error, cancelled)
            slots = list(stream.slots.values())
            stream.slots.clear()
            finalize_now = not stream.pumping
            stream.pumping = True  # nobody delivers to it any more
        for slot in slots:
            if slot.future is not None:
                slot.future.cancel()
        with self._cond:
            self._streams.pop(stream.ident, None)
            self._cond.notify_all()
        if finalize_now:
            self._finalize(stream)

    def _finalize(self, stream: Stream) -> None:
        error, cancelled = stream.end_reason
        if error is None and not cancelled:
            try:
                output = stream.sink.close()
            except BaseException as exc:  # a failed close is the stream's failure
                stream.sink.abort(exc)
                stream.done.set_exception(exc)
                return
            stream.timings["total_s"] = time.monotonic() - stream.opened_at
            stream.done.set_result(
                StreamResult(stream.delivered, stream.repeated, output, stream.timings)
            )
            return
        try:
            stream.sink.abort(error)
        except Exception:
            logger.exception("%s: aborting its sink failed", stream.label)
        stream.done.set_exception(error if error is not None else StreamCancelled(stream.label))

    # -- admission -------------------------------------------------------------------------

    def _has_room(self, stream: Stream) -> bool:
        """Whether ``stream``'s fps fits next to the live streams running now (caller holds
        the condition). Unknown capacity, or no other live stream, always fits."""
        running = [
            s
            for s in self._streams.values()
            if s.kind == LIVE and not s.pending and s is not stream and s.features is not None
        ]
        capacity = self._frames_per_s()
        if not running or capacity <= 0:
            return True
        return sum(s.fps for s in running) + stream.fps <= capacity

    def _admit(self) -> None:
        """Start waiting live streams, oldest first, while they fit (caller holds the
        condition)."""
        waiting = sorted(
            (s for s in self._streams.values() if s.pending and not s.ended),
            key=lambda s: s.opened_at,
        )
        for stream in waiting:
            if not self._has_room(stream):
                return
            stream.pending = False
            stream.started_at = stream.last_served = time.monotonic()
            logger.info("%s: room now, starting", stream.label)

    # -- the model thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (
                    self._holds or not any(s.wants_frames() for s in self._streams.values())
                ):
                    self._admit()
                    self._cond.wait(timeout=0.5)
                if self._closed:
                    return
                self._admit()
                plan, repeats = self._plan(time.monotonic())
            if plan:
                self._step(plan)
            for stream in repeats:
                self._pump(stream)  # repeats placed by the plan may be deliverable already

    def _plan(self, now: float) -> tuple[list[tuple[Stream, int]], list[Stream]]:
        """The frames of the next batch, (stream, frame index) in batch order, and the
        streams given repeated frames (placed directly: they cost no model work)."""
        heap: list[tuple[float, int, Stream]] = []
        for stream in self._streams.values():
            if stream.wants_frames():
                if stream.kind == LIVE and self.degrade:
                    self._adjust_stride(stream, now)
                heap.append((self._priority(stream, now), stream.ident, stream))
        heapq.heapify(heap)
        plan: list[tuple[Stream, int]] = []
        repeats: dict[int, Stream] = {}
        taken: dict[int, int] = {}
        limits: dict[int, int] = {}
        while heap and len(plan) < self.max_batch:
            _, ident, stream = heapq.heappop(heap)
            limits.setdefault(ident, stream.batch_limit())
            index = stream.next_index
            while (
                stream.stride > 1
                and index % stream.stride != 0
                and index < stream.total
                and stream.in_flight() < stream.window
            ):
                with stream.lock:
                    stream.slots[index] = _REPEAT
                stream.next_index = index = index + 1
                repeats[stream.ident] = stream
            if not stream.wants_frames():
                continue
            plan.append((stream, index))
            stream.next_index += 1
            stream.last_served = now
            taken[ident] = taken.get(ident, 0) + 1
            if taken[ident] < limits[ident] and stream.wants_frames():
                heapq.heappush(heap, (self._priority(stream, now), ident, stream))
        return plan, list(repeats.values())

    @staticmethod
    def _priority(stream: Stream, now: float) -> float:
        if stream.kind == LIVE:
            return stream.deadline(stream.next_index)
        # after the live frames due within the horizon, unless it has waited too long
        return min(now + JOB_LIVE_HORIZON_S, stream.last_served + JOB_MAX_WAIT_S)

    @staticmethod
    def _adjust_stride(stream: Stream, now: float) -> None:
        if now - stream.stride_changed_at < STRIDE_HOLD_S or stream.delivered == 0:
            return  # before its first frame a stream has no playback clock to be late on
        lateness = now - stream.deadline(stream.next_index)
        if lateness > DEGRADE_AFTER_S and stream.stride < MAX_STRIDE:
            stream.stride += 1
        elif lateness < -RECOVER_AHEAD_S and stream.stride > 1:
            stream.stride -= 1
        else:
            return
        stream.stride_changed_at = now
        logger.info("%s: generating every %s frame(s) now", stream.label, stream.stride)

    def _step(self, plan: list[tuple[Stream, int]]) -> None:
        """One UNet + VAE batch for ``plan``; the faces are blended in the pool (or, with
        ``device_blend``, on the device right here, converted to I420 there too)."""
        try:
            faces, unet_s, decode_s = self._model_batch(plan)
            pictures = self._device_pictures(plan, faces) if self.device_blend else None
        except BaseException as exc:  # every stream of the batch fails with it
            logger.exception("model batch of %d frames failed", len(plan))
            for stream in {id(s): s for s, _ in plan}.values():
                self._end(stream, exc, False)
            return
        self._record(len(plan), unet_s + decode_s)
        for n, (stream, index) in enumerate(plan):
            if index == 0:  # the model's share of its first frame's wait
                stream.timings["first_batch_s"] = unet_s + decode_s
                stream.timings["first_batch_frames"] = len(plan)
            stream.timings["unet_s"] = stream.timings.get("unet_s", 0.0) + unet_s / len(plan)
            stream.timings["vae_decode_s"] = stream.timings.get(
                "vae_decode_s", 0.0
            ) + decode_s / len(plan)
            with stream.lock:
                if stream.ended:
                    continue
                if pictures is not None:
                    future: Future[np.ndarray] = Future()
                    future.set_result(pictures[n])
                else:
                    face = faces[n]
                    future = self._blend_pool.submit(
                        self._timed_blend, stream.avatar, stream.cycle_start + index, face
                    )
                stream.slots[index] = _Slot(future)
            future.add_done_callback(functools.partial(self._pumped, stream))

    def _device_pictures(self, plan: list[tuple[Stream, int]], faces: Any) -> list[np.ndarray]:
        """Paste-back and BGR -> I420 on the device, per avatar of the batch; the planes
        come back to the host (a third smaller than BGR)."""
        pictures: list[np.ndarray | None] = [None] * len(plan)
        groups: dict[int, list[int]] = {}
        for n, (stream, _) in enumerate(plan):
            groups.setdefault(id(stream.avatar), []).append(n)
        for positions in groups.values():
            avatar = plan[positions[0]][0].avatar
            blender = self._blender(avatar)
            stored = [avatar.frame_index(plan[n][0].cycle_start + plan[n][1]) for n in positions]
            chosen = torch.tensor(positions, device=faces.device)
            planes = bgr_to_yuv420p(blender.blend(stored, faces.index_select(0, chosen)))
            for n, picture in zip(positions, planes.cpu().numpy(), strict=True):
                pictures[n] = picture
        return [p for p in pictures if p is not None]

    def _blender(self, avatar: PreparedAvatar) -> DeviceBlender:
        """The avatar's device blender (uploaded once, dropped with the last stream)."""
        key = id(avatar)
        known = self._blenders.get(key)
        if known is not None and known[0] is avatar:
            return known[1]
        with self._cond:
            in_use = {id(s.avatar) for s in self._streams.values()}
        for stale in [k for k in self._blenders if k not in in_use]:
            del self._blenders[stale]
        blender = DeviceBlender.for_avatar(avatar, self.models.device)
        self._blenders[key] = (avatar, blender)
        return blender

    def _timed_blend(self, avatar: PreparedAvatar, index: int, face: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        image = self._blend_fn(avatar, index, face)
        self._cpu_cost("blend", time.perf_counter() - started)
        return image

    def _cpu_cost(self, stage: str, seconds: float) -> None:
        """Smoothed seconds per frame of a CPU stage (blend, delivery)."""
        with self._cost_lock:
            known = self._costs.get(stage)
            self._costs[stage] = (
                seconds if known is None else known + RATE_SMOOTHING * 0.1 * (seconds - known)
            )

    def _model_batch(self, plan: list[tuple[Stream, int]]) -> tuple[Any, float, float]:
        """UNet + VAE decode: faces (B, 256, 256, 3) uint8 BGR, as a numpy array on the host,
        or as a tensor on the device with ``device_blend``; and the seconds of each model."""
        latents = torch.stack(
            [
                stream.avatar.latents[stream.avatar.frame_index(stream.cycle_start + i)]
                for stream, i in plan
            ]
        )
        audio = torch.stack([_features(stream)[i] for stream, i in plan])
        size = next((n for n in self.padded_sizes if n >= len(plan)), len(plan))
        if size > len(plan):  # repeat the last frame's inputs; its extra outputs are dropped
            extra = size - len(plan)
            latents = torch.cat([latents, latents[-1:].expand(extra, *latents.shape[1:])])
            audio = torch.cat([audio, audio[-1:].expand(extra, *audio.shape[1:])])
        dtype_bytes = torch.finfo(self.models.dtype).bits // 8
        estimate = estimate_batch_bytes(
            batch_size=len(plan), dtype_bytes=dtype_bytes, profile=self.models.profile
        )
        with self.budget.reserve(min(estimate, self.budget.total_bytes), label="generate"):
            t0 = time.perf_counter()
            predicted = predict_latents(self.models, latents, audio)
            t1 = time.perf_counter()
            faces = self._decode(predicted)[: len(plan)]
            t2 = time.perf_counter()
        self._steps += 1
        self._frames_made += len(plan)
        self.step_log.append(tuple((stream.ident, i) for stream, i in plan))
        return faces, t1 - t0, t2 - t1

    def _decode(self, predicted: torch.Tensor) -> Any:
        """VAE decode (B, 4, 32, 32) -> (B, 256, 256, 3) uint8 BGR, in slices on CPU; a
        device tensor with ``device_blend``, else a host array."""
        step = self.decode_batch_size or predicted.shape[0]
        chunks = [predicted[start : start + step] for start in range(0, predicted.shape[0], step)]
        if self.device_blend:
            tensors = [decode_latents_tensor(self.models.vae, part) for part in chunks]
            return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
        parts = [decode_latents(self.models.vae, part) for part in chunks]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    # -- delivery (sinks), on the delivery pool ------------------------------------------------

    def _pumped(self, stream: Stream, _done: Future[np.ndarray]) -> None:
        self._pump(stream)

    def _pump(self, stream: Stream) -> None:
        with stream.lock:
            if stream.ended:
                return
            stream.dirty = True
            if stream.pumping:
                return
            stream.pumping = True
        try:
            self._delivery_pool.submit(self._drain, stream)
        except RuntimeError:  # the pool is shut down: the engine is closing
            with stream.lock:
                stream.pumping = False

    def _drain(self, stream: Stream) -> None:
        """Hand every frame that is ready, in order, to the stream's sink; finish the stream
        when it ended meanwhile."""
        while True:
            with stream.lock:
                if stream.ended:
                    break
                stream.dirty = False
                slot = stream.slots.get(stream.delivered)
                if slot is None or (slot.future is not None and not slot.future.done()):
                    if stream.dirty:
                        continue
                    stream.pumping = False
                    return
                del stream.slots[stream.delivered]
            try:
                keep_going = self._deliver(stream, slot)
            except BaseException as exc:
                self._end(stream, exc, False)
                continue
            if not keep_going:
                self._end(stream, None, True)
            elif stream.delivered == stream.total:
                self._end(stream, None, False)
            else:
                with self._cond:
                    self._cond.notify_all()  # the stream's window has room again
        self._finalize(stream)

    def _deliver(self, stream: Stream, slot: _Slot) -> bool:
        index = stream.delivered
        if slot.future is not None:
            image = slot.future.result()
            stream.last_image = image
        elif stream.last_image is not None:
            image = stream.last_image
            stream.repeated += 1
        else:  # never: frame 0 is always generated
            raise InferenceError("a repeated frame has nothing to repeat")
        if index == 0:
            now = time.monotonic()
            stream.timings["first_frame_s"] = now - stream.opened_at
            # A player starts on the first frames it gets: the playback clock starts here
            stream.started_at = now
        start, end = audio_bounds(index, 1, stream.fps)
        height, width = stream.avatar.frames[0].shape[:2]
        frame = Frame(
            index,
            None if self.device_blend else image,
            stream.fps,
            start,
            end,
            repeated=slot.future is None,
            yuv=image if self.device_blend else None,
            size=(width, height),
        )
        started = time.perf_counter()
        keep_going = stream.sink.write(frame)
        self._cpu_cost("delivery", time.perf_counter() - started)
        stream.delivered += 1
        return keep_going

    # -- cancellation --------------------------------------------------------------------------

    def _watch(self) -> None:
        """Ask each stream's ``cancelled`` hook, off the model thread (a hook may query a
        database); a hook that raises ends its stream with that error."""
        while True:
            with self._cond:
                if self._closed:
                    return
                streams = [s for s in self._streams.values() if s.cancelled is not None]
            now = time.monotonic()
            for stream in streams:
                if now - stream.cancel_checked < CANCEL_POLL_S:
                    continue
                stream.cancel_checked = now
                try:
                    stop = stream.cancelled() if stream.cancelled is not None else False
                except BaseException as exc:
                    self._end(stream, exc, False)
                    continue
                if stop:
                    self._end(stream, None, True)
            time.sleep(CANCEL_POLL_S / 2)

    # -- capacity ------------------------------------------------------------------------------

    def _record(self, batch: int, seconds: float) -> None:
        if seconds <= 0:
            return
        rate = batch / seconds
        with self._cond:
            known = self._rates.get(batch)
            if known is None:
                self._rates[batch] = _Rate(rate)
            else:
                known.frames_per_s += RATE_SMOOTHING * (rate - known.frames_per_s)
                known.samples += 1

    def calibrate(self, batch_sizes: list[int] | None = None) -> dict[int, float]:
        """Run one batch of each size on neutral inputs and record its frames/s (done at
        boot, so capacity is known before the first stream; it also warms the kernels)."""
        sizes = sorted({min(max(1, b), self.max_batch) for b in (batch_sizes or [1])})
        sizes = sizes or [1]
        measured: dict[int, float] = {}
        noise = torch.Generator().manual_seed(0)
        for size in sizes:
            # random, not zeros: all-zero inputs run some CPU kernels on denormals, twice slower
            latents = torch.randn((size, 8, 32, 32), generator=noise).to(self.models.dtype)
            audio = torch.randn((size, 50, 384), generator=noise).to(self.models.dtype)
            for attempt in range(2):  # the first run of a shape pays one-off costs
                t0 = time.perf_counter()
                self._decode(predict_latents(self.models, latents, audio))
                seconds = time.perf_counter() - t0
                if attempt == 1:
                    self._record(size, seconds)
                    measured[size] = size / seconds
        return measured

    def _frames_per_s(self) -> float:
        """Sustained frames/s of the whole pipeline (caller may hold the condition).

        The model's best measured rate, limited by the CPU stages once they were measured:
        on CUDA they run beside the device on the pools' threads (each stage's threads over
        its cost per frame); on a CPU they share the cores with the model, so the seconds
        add up (model per frame + CPU stages per frame over the cores).
        """
        model = max((rate.frames_per_s for rate in self._rates.values()), default=0.0)
        if model <= 0:
            return 0.0
        with self._cost_lock:
            blend = self._costs.get("blend", 0.0)
            delivery = self._costs.get("delivery", 0.0)
        if self.models.device.type == "cuda":
            limits = [model]
            if blend > 0:
                limits.append(min(self._blend_workers, self._cores) / blend)
            if delivery > 0:
                limits.append(min(self._delivery_workers, self._cores) / delivery)
            return min(limits)
        return 1.0 / (1.0 / model + (blend + delivery) / self._cores)

    def _device_id(self) -> str:
        """Which physical device this is (a GPU's UUID; "cpu"): worker processes that
        share one share its frames/s."""
        device = self.models.device
        if device.type != "cuda":
            return device.type
        try:
            return str(torch.cuda.get_device_properties(device).uuid)
        except (AttributeError, RuntimeError):  # no UUID in this build: the index
            return f"cuda:{device.index or 0}"

    def capacity(self) -> dict[str, Any]:
        """This scheduler's measured throughput and load (published with the heartbeat)."""
        with self._cond:
            rates = {size: rate.frames_per_s for size, rate in sorted(self._rates.items())}
            streams = list(self._streams.values())
            sustained = self._frames_per_s()
        with self._cost_lock:
            costs = {stage: round(seconds * 1000, 2) for stage, seconds in self._costs.items()}
        live = [s for s in streams if s.kind == LIVE]
        return {
            "measured": bool(rates),
            "device": str(self.models.device),
            "device_id": self._device_id(),
            "frames_per_s": round(sustained, 2),
            "model_frames_per_s": round(max(rates.values(), default=0.0), 2),
            "frames_per_s_by_batch": {str(size): round(v, 2) for size, v in rates.items()},
            "cpu_ms_per_frame": costs,
            "max_batch": self.max_batch,
            "active_streams": len(live),
            "pending_streams": sum(1 for s in live if s.pending),
            "active_jobs": len(streams) - len(live),
            "live_frames_per_s": float(sum(s.fps for s in live if not s.pending)),
            "stream_seconds_left": round(sum(s.seconds_left for s in live), 2),
            "degraded_streams": sum(1 for s in live if s.stride > 1),
            "frames_made": self._frames_made,
            "steps": self._steps,
        }


def _features(stream: Stream) -> torch.Tensor:
    assert stream.features is not None  # only streams with features are planned
    return stream.features
