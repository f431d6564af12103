"""How many live frames per second the workers can make, and how many more sessions fit.

Each generating worker measures its sustained frames/s and publishes it with its heartbeat
(``engine["capacity"]``, see :func:`worker_capacity`). These pure functions turn the live
workers' heartbeat details (:func:`musetalk_site.health.live_workers`) into the capacity
report of ``GET /capacity`` and into admission decisions; the caller reads the database.

The rules, written down once:

- Sessions are not pinned to a worker: any worker that serves the ``stream`` queue may take any
  utterance. So admission uses the *total*: the frames/s of every measured device (worker
  processes sharing a GPU count once), times ``LIVE_CAPACITY_TARGET`` (headroom, so admitted
  streams stay real-time).
- An open session reserves its fps even while silent: it may speak at any moment. The total's
  ``available_sessions`` is ``floor((frames_per_s * target - reserved_frames_per_s) / fps)``,
  never negative, where ``reserved_frames_per_s`` sums the fps of every open session.
- A worker's own ``available_sessions`` is what it could still take beside the streams it is
  generating now (its ``live_frames_per_s``), not counting silent sessions: it says where the
  room is, and the per-worker numbers need not add up to the total's.
- Unknown capacity never refuses: when no worker has measured yet (or none is alive), the
  report says ``"measured": false``, ``available_sessions`` is null and admission is open.
- An idle platform admits one: with nothing reserved, a session is admitted even when one
  session's fps is more than the workers make (it slows nobody else down).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# How a 429 of admission is described in the OpenAPI schema.
CAPACITY_FULL = (
    "The platform is at capacity (`extra.reason` is `capacity`): retry after `Retry-After` "
    "seconds (`extra.retry_after_seconds`), or send `wait=true`."
)
# Retry-After when nothing is streaming, so no utterance's end can be foreseen: the room is
# held by silent sessions, which free it only when they end.
IDLE_RETRY_SECONDS = 5
STREAM_QUEUES = ("stream", "*")


@dataclass(frozen=True)
class WorkerCapacity:
    """One worker's published capacity (``engine["capacity"]`` of its heartbeat)."""

    worker_id: str
    device: str = ""
    # the physical device: processes on one host that share it share its frames/s
    device_key: str = ""
    measured: bool = False
    frames_per_s: float = 0.0
    frames_per_s_by_batch: dict[str, float] = field(default_factory=dict)
    max_batch: int = 0
    active_streams: int = 0
    pending_streams: int = 0
    active_jobs: int = 0
    live_frames_per_s: float = 0.0
    stream_seconds_left: float = 0.0


def serves_streams(worker: Mapping[str, Any]) -> bool:
    """Whether a worker takes live utterances (its queues include ``stream``, or all)."""
    queues = worker.get("queues") or ["*"]
    return any(queue in STREAM_QUEUES for queue in queues)


def worker_capacity(worker: Mapping[str, Any]) -> WorkerCapacity:
    """A live worker's capacity from its heartbeat detail; a heartbeat without
    ``engine["capacity"]`` (an older worker, or none measured yet) is unmeasured."""
    engine = worker.get("engine") or {}
    published = engine.get("capacity") or {}
    measured = bool(published.get("measured")) and _number(published, "frames_per_s") > 0
    return WorkerCapacity(
        worker_id=str(worker.get("worker_id", "")),
        device=str(published.get("device") or engine.get("device") or ""),
        device_key=f"{worker.get('hostname', '')}/{published.get('device_id') or ''}",
        measured=measured,
        frames_per_s=_number(published, "frames_per_s") if measured else 0.0,
        frames_per_s_by_batch={
            str(batch): float(fps)
            for batch, fps in (published.get("frames_per_s_by_batch") or {}).items()
        },
        max_batch=int(_number(published, "max_batch")),
        active_streams=int(_number(published, "active_streams")),
        pending_streams=int(_number(published, "pending_streams")),
        active_jobs=int(_number(published, "active_jobs")),
        live_frames_per_s=_number(published, "live_frames_per_s"),
        stream_seconds_left=_number(published, "stream_seconds_left"),
    )


def _number(data: Mapping[str, Any], key: str) -> float:
    try:
        value = float(data.get(key) or 0)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def stream_workers(workers: Iterable[Mapping[str, Any]]) -> list[WorkerCapacity]:
    """The capacities of the live workers that take live utterances."""
    return [worker_capacity(worker) for worker in workers if serves_streams(worker)]


def available_sessions(
    *, frames_per_s: float, target: float, reserved_frames_per_s: float, fps: int
) -> int:
    """How many more sessions of ``fps`` fit in ``frames_per_s * target`` beside what is
    reserved; never negative."""
    room = frames_per_s * target - reserved_frames_per_s
    return max(0, math.floor(room / fps + 1e-9))


def total_frames_per_s(capacities: Iterable[WorkerCapacity]) -> float:
    """The measured frames/s of all the workers together (unmeasured ones add nothing).

    Worker processes that share one device (one GPU, or one host's CPU) each measured the
    whole device: they count once, at the best of their figures. A worker that does not
    say which device it runs on counts on its own.
    """
    best: dict[str, float] = {}
    for item in capacities:
        if not item.measured:
            continue
        key = item.device_key if not item.device_key.endswith("/") else item.worker_id
        best[key] = max(best.get(key, 0.0), item.frames_per_s)
    return sum(best.values())


def is_measured(capacities: Iterable[WorkerCapacity]) -> bool:
    return any(item.measured for item in capacities)


def session_fits(
    capacities: list[WorkerCapacity], *, target: float, reserved_frames_per_s: float, fps: int
) -> bool:
    """Whether one more session of ``fps`` may open (unknown capacity and an idle platform
    always admit)."""
    if not is_measured(capacities) or reserved_frames_per_s <= 0:
        return True
    total = total_frames_per_s(capacities)
    return (
        available_sessions(
            frames_per_s=total, target=target, reserved_frames_per_s=reserved_frames_per_s, fps=fps
        )
        >= 1
    )


def stream_fits(
    capacities: list[WorkerCapacity], *, target: float, demand_frames_per_s: float, fps: int
) -> bool:
    """Whether one more utterance of ``fps`` may start now beside the ``demand`` of the
    utterances queued or streaming (unknown capacity and an idle platform always admit)."""
    if not is_measured(capacities) or demand_frames_per_s <= 0:
        return True
    return demand_frames_per_s + fps <= total_frames_per_s(capacities) * target + 1e-9


def retry_after_seconds(capacities: Iterable[WorkerCapacity]) -> int:
    """When room may free up, in whole seconds (at least 1): about when the first of the
    utterances being generated ends, from each worker's seconds of audio left per stream.
    With nothing streaming no end can be foreseen: ``IDLE_RETRY_SECONDS``."""
    ends = [
        item.stream_seconds_left / max(1, item.active_streams)
        for item in capacities
        if item.active_streams > 0 and item.stream_seconds_left > 0
    ]
    if not ends:
        return IDLE_RETRY_SECONDS
    return max(1, math.ceil(min(ends)))


def capacity_report(
    capacities: list[WorkerCapacity],
    *,
    fps: int,
    target: float,
    reserved_frames_per_s: float,
    active_sessions: int,
) -> dict[str, Any]:
    """``GET /capacity``: each worker's measured capacity and what it could still take, and
    the total, which admission uses (see the module's rules)."""
    measured = is_measured(capacities)
    total = total_frames_per_s(capacities)
    room = available_sessions(
        frames_per_s=total, target=target, reserved_frames_per_s=reserved_frames_per_s, fps=fps
    )
    return {
        "fps": fps,
        "target": target,
        "workers": [_worker_entry(item, fps=fps, target=target) for item in capacities],
        "total": {
            "measured": measured,
            "frames_per_s": round(total, 2),
            "reserved_frames_per_s": round(reserved_frames_per_s, 2),
            "live_frames_per_s": round(sum(item.live_frames_per_s for item in capacities), 2),
            "active_streams": sum(item.active_streams for item in capacities),
            "pending_streams": sum(item.pending_streams for item in capacities),
            "active_sessions": active_sessions,
            "available_sessions": room if measured else None,
            "retry_after_seconds": retry_after_seconds(capacities),
        },
    }


def _worker_entry(item: WorkerCapacity, *, fps: int, target: float) -> dict[str, Any]:
    entry = asdict(item)
    entry["frames_per_s"] = round(item.frames_per_s, 2)
    entry["available_sessions"] = (
        available_sessions(
            frames_per_s=item.frames_per_s,
            target=target,
            reserved_frames_per_s=item.live_frames_per_s,
            fps=fps,
        )
        if item.measured
        else None
    )
    return entry
