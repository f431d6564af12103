"""A blocking, fair allocator of accelerator memory, plus per-batch memory estimates.

``GPUMemoryBudget`` does not allocate anything itself: work declares how many bytes of activations
a batch will need (``estimate_batch_bytes``) and reserves them before running, so concurrent
streams and jobs never ask the device for more than the budget. On CPU the same object budgets
host memory.

Usage::

    budget = GPUMemoryBudget(total_bytes=default_budget_bytes("cuda"))
    nbytes = estimate_batch_bytes(batch_size=8, dtype_bytes=2, profile="musetalk-v15")
    with budget.reserve(nbytes, timeout=30.0, label="session/42"):
        frames = pipeline.generate_batch(...)
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from inference.config import PROFILE_MUSETALK_V15, PROFILE_RANDOM_FULL, PROFILE_RANDOM_TINY
from inference.errors import BudgetTimeoutError, InferenceError

logger = logging.getLogger(__name__)

STAGE_GENERATE = "generate"
STAGE_PREPARE = "prepare"
STAGES = (STAGE_GENERATE, STAGE_PREPARE)

# Peak activation bytes per batch, measured once in fp32 on CPU (torch 2.13, diffusers 0.42.1)
# from the profiler's allocation stream (torch.profiler, profile_memory=True: the running peak of
# allocated minus freed bytes while the stage runs under inference_mode; weights excluded). The
# peak is linear in the batch size except that batch 1 costs a little more than the slope, so an
# estimate is FIRST + PER_FRAME * (B - 1), which bounds every measured batch from above.
#   generate: PE'd audio (B,50,384) + latents (B,8,32,32) -> UNet -> (B,4,32,32) -> VAE decode ->
#             (B,3,256,256) -> (B,256,256,3) uint8. Full size measured at B = 1, 2, 4:
#             254.2 MB, 403.0 MB, 805.9 MB. The VAE decoder's 256x256 levels dominate.
#   prepare:  two VAE encodes of (B,3,256,256) (lower half masked, then full), concatenated to
#             (B,8,32,32). Full size measured at B = 1, 2, 4: 170.0 MB, 339.3 MB, 678.0 MB.
# The tiny profile (ENVIRONMENT.md's stand-ins) was measured at B = 1, 2, 4, 8.
_FULL_GENERATE = (254_176_256, 201_485_312)  # (FIRST, PER_FRAME) bytes in fp32
_FULL_PREPARE = (169_951_232, 169_361_408)
_TINY_GENERATE = (29_555_712, 25_324_544)
_TINY_PREPARE = (19_489_920, 19_480_704)
# The CPU measurement holds fp32 tensors; half precision halves them (dtype_bytes / 4). CUDA adds
# what the CPU run cannot see (caching-allocator rounding and fragmentation, cuDNN workspaces), so
# the estimate carries 25% headroom. An assumption, not a GPU measurement: confirm it with
# torch.cuda.max_memory_allocated in a benchmark on the target card.
_HEADROOM = 1.25


class _Waiter:
    """One queued request; identity matters (the FIFO holds these objects)."""

    __slots__ = ("nbytes", "label")

    def __init__(self, nbytes: int, label: str) -> None:
        self.nbytes = nbytes
        self.label = label


@dataclass(eq=False)
class Reservation:
    """Bytes granted to one piece of work until ``release()`` (idempotent)."""

    nbytes: int
    label: str
    granted_at: float
    _budget: GPUMemoryBudget = field(repr=False)
    released: bool = False

    def release(self) -> None:
        self._budget.release(self)


@dataclass(frozen=True)
class BudgetUsage:
    """A consistent snapshot of the budget.

    ``active`` maps each label to the bytes its live reservations hold; ``granted`` and
    ``timeouts`` count requests since the budget was created; ``peak`` is the most bytes ever
    reserved at once.
    """

    total: int
    reserved: int
    available: int
    peak: int
    waiting: int
    active: dict[str, int]
    active_count: int
    granted: int
    timeouts: int


class GPUMemoryBudget:
    """Grants byte reservations so that their sum never exceeds ``total_bytes``.

    With ``fair=True`` requests are granted in arrival order: a large request at the head of the
    queue holds back later small ones until enough memory is released, so it is never starved.
    With ``fair=False`` any waiting request that fits is granted (more throughput, no guarantee).
    """

    def __init__(self, *, total_bytes: int, fair: bool = True) -> None:
        if total_bytes <= 0:
            raise ValueError(f"total_bytes must be > 0, got {total_bytes}")
        self.total_bytes = total_bytes
        self.fair = fair
        # The condition's lock guards every field below. Waiters re-check on every notify_all.
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Waiter] = deque()
        self._active: dict[int, Reservation] = {}
        self._reserved = 0
        self._peak = 0
        self._granted = 0
        self._timeouts = 0

    @contextmanager
    def reserve(
        self, nbytes: int, *, timeout: float | None = None, label: str = ""
    ) -> Iterator[Reservation]:
        """Block until ``nbytes`` are granted, yield the reservation, release it on exit.

        Raises:
            ValueError: ``nbytes`` is negative or larger than the whole budget.
            BudgetTimeoutError: not granted within ``timeout`` seconds (None waits forever).
        """
        reservation = self.acquire(nbytes, timeout=timeout, label=label)
        try:
            yield reservation
        finally:
            self.release(reservation)

    def acquire(self, nbytes: int, *, timeout: float | None = None, label: str = "") -> Reservation:
        """Like ``reserve`` without the context manager; the caller must ``release`` it."""
        self._check_request(nbytes, label)
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = _Waiter(nbytes, label)
        with self._cond:
            self._queue.append(waiter)
            try:
                self._wait_for_turn(waiter, deadline, timeout)
            finally:
                # Leaving the queue (granted, timed out or interrupted) may unblock the next head.
                self._queue.remove(waiter)
                self._cond.notify_all()
            return self._grant_locked(nbytes, label)

    def release(self, reservation: Reservation) -> None:
        """Return a reservation's bytes to the budget; releasing twice does nothing."""
        with self._cond:
            if reservation.released:
                return
            reservation.released = True
            del self._active[id(reservation)]
            self._reserved -= reservation.nbytes
            self._cond.notify_all()

    def usage(self) -> BudgetUsage:
        with self._cond:
            active: dict[str, int] = {}
            for reservation in self._active.values():
                active[reservation.label] = active.get(reservation.label, 0) + reservation.nbytes
            return BudgetUsage(
                total=self.total_bytes,
                reserved=self._reserved,
                available=self.total_bytes - self._reserved,
                peak=self._peak,
                waiting=len(self._queue),
                active=active,
                active_count=len(self._active),
                granted=self._granted,
                timeouts=self._timeouts,
            )

    def _check_request(self, nbytes: int, label: str) -> None:
        if nbytes < 0:
            raise ValueError(f"cannot reserve a negative number of bytes ({nbytes})")
        if nbytes > self.total_bytes:
            raise ValueError(
                f"cannot reserve {_fmt(nbytes)} for {label or 'unlabelled work'}: the whole "
                f"memory budget is {_fmt(self.total_bytes)}; use a smaller batch size"
            )

    def _wait_for_turn(
        self, waiter: _Waiter, deadline: float | None, timeout: float | None
    ) -> None:
        while not self._can_grant_locked(waiter):
            if deadline is None:
                self._cond.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timeouts += 1
                raise BudgetTimeoutError(self._timeout_message(waiter, timeout))
            self._cond.wait(remaining)

    def _can_grant_locked(self, waiter: _Waiter) -> bool:
        if self.fair and self._queue[0] is not waiter:
            return False
        return self._reserved + waiter.nbytes <= self.total_bytes

    def _grant_locked(self, nbytes: int, label: str) -> Reservation:
        reservation = Reservation(
            nbytes=nbytes, label=label, granted_at=time.monotonic(), _budget=self
        )
        self._active[id(reservation)] = reservation
        self._reserved += nbytes
        self._peak = max(self._peak, self._reserved)
        self._granted += 1
        return reservation

    def _timeout_message(self, waiter: _Waiter, timeout: float | None) -> str:
        available = self.total_bytes - self._reserved
        return (
            f"timed out after {timeout}s waiting to reserve {_fmt(waiter.nbytes)} of GPU/host "
            f"memory for {waiter.label or 'unlabelled work'}: {_fmt(available)} of "
            f"{_fmt(self.total_bytes)} available, {len(self._queue) - 1} other request(s) waiting"
        )


def estimate_batch_bytes(
    *, batch_size: int, dtype_bytes: int, profile: str, stage: str = STAGE_GENERATE
) -> int:
    """Peak activation bytes of one batch (weights excluded), with headroom.

    ``stage`` is ``"generate"`` (UNet + VAE decode at 256x256, batch (B,8,32,32) latents) or
    ``"prepare"`` (two VAE encodes of (B,3,256,256) crops). ``dtype_bytes`` is 2 for fp16/bf16,
    4 for fp32. The formula is ``(FIRST + PER_FRAME * (B - 1)) * dtype_bytes / 4 * 1.25`` with
    FIRST/PER_FRAME measured in fp32 (see the constants above). ``musetalk-v15`` and
    ``random-full`` share one architecture and so one estimate.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if dtype_bytes not in (2, 4):
        raise ValueError(f"dtype_bytes must be 2 (fp16/bf16) or 4 (fp32), got {dtype_bytes}")
    first, per_frame = _activation_cost(profile, stage)
    fp32_bytes = first + per_frame * (batch_size - 1)
    return math.ceil(fp32_bytes * dtype_bytes / 4 * _HEADROOM)


def max_batch_that_fits(
    *,
    available_bytes: int,
    dtype_bytes: int,
    profile: str,
    stage: str = STAGE_GENERATE,
    limit: int = 64,
) -> int:
    """The largest batch size <= ``limit`` whose estimate fits ``available_bytes``; 0 if none."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    best = 0
    # A plain scan: the estimate is monotonic and ``limit`` is small.
    for batch_size in range(1, limit + 1):
        estimate = estimate_batch_bytes(
            batch_size=batch_size, dtype_bytes=dtype_bytes, profile=profile, stage=stage
        )
        if estimate > available_bytes:
            break
        best = batch_size
    return best


def default_budget_bytes(device: str, fraction: float = 0.8) -> int:
    """``fraction`` of the memory free now on ``device`` ("cpu", "cuda" or "cuda:N").

    Call it after the models are loaded: what they hold is no longer free. On CUDA this reads
    ``torch.cuda.mem_get_info``; on CPU, ``MemAvailable`` from /proc/meminfo (or sysconf's
    available pages where /proc is missing).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if device == "cpu":
        free = _host_available_bytes()
    elif device == "cuda" or device.startswith("cuda:"):
        free = _cuda_free_bytes(device)
    else:
        raise ValueError(f"unsupported device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'")
    return int(free * fraction)


def _activation_cost(profile: str, stage: str) -> tuple[int, int]:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    if profile in (PROFILE_MUSETALK_V15, PROFILE_RANDOM_FULL):
        return _FULL_GENERATE if stage == STAGE_GENERATE else _FULL_PREPARE
    if profile == PROFILE_RANDOM_TINY:
        return _TINY_GENERATE if stage == STAGE_GENERATE else _TINY_PREPARE
    raise ValueError(f"unknown model profile {profile!r}")


def _cuda_free_bytes(device: str) -> int:
    import torch  # here, not at the top: the budget itself is pure Python

    if not torch.cuda.is_available():
        raise InferenceError(
            f"device {device!r} was requested but CUDA is not available", permanent=True
        )
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def _host_available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file says kB and means KiB
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _fmt(nbytes: int) -> str:
    """``123456789`` -> ``"123456789 bytes (117.7 MiB)"``: exact for logs, readable for people."""
    return f"{nbytes} bytes ({nbytes / 2**20:.1f} MiB)"
