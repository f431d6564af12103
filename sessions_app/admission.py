"""Admission of live sessions and utterances against the workers' measured capacity.

The rules are :mod:`musetalk_site.capacity`'s; this module reads what they need: the live
workers' heartbeats (Redis) and the open sessions and active utterances (the database).
Capacity is global by design: every user's sessions share the workers, so the report and the
refusals give counts and frames/s, never another user's sessions.

Two requests that arrive at the same moment may both take the last room (nothing locks the
whole platform); the headroom of ``LIVE_CAPACITY_TARGET`` absorbs such an overshoot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone

from musetalk_site.capacity import (
    WorkerCapacity,
    available_sessions,
    capacity_report,
    retry_after_seconds,
    session_fits,
    stream_fits,
    stream_workers,
    total_frames_per_s,
)
from musetalk_site.errors import ApplicationError
from musetalk_site.health import check_worker, live_workers
from sessions_app.models import StreamRequest, StreamSession

MAX_WAIT_SECONDS = 30.0  # the longest a session create with wait=true blocks
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class StreamAdmission:
    """How an utterance was admitted: at once, or queued behind others (``wait=true``)."""

    queued: bool = False
    eta_seconds: int = 0


def _capacities() -> list[WorkerCapacity]:
    return stream_workers(live_workers(check_worker(True)))


def _open_sessions() -> tuple[int, int]:
    """The open sessions of every user and the sum of their fps (what they reserve)."""
    found = StreamSession.objects.filter(
        status=StreamSession.Status.ACTIVE, expires_at__gt=timezone.now()
    ).aggregate(count=Count("pk"), fps=Sum("fps"))
    return found["count"] or 0, found["fps"] or 0


def _streams_demand(*, besides: StreamSession) -> int:
    """The fps of the other sessions whose utterance is queued or streaming now."""
    speaking = StreamRequest.objects.filter(status__in=StreamRequest.ACTIVE_STATUSES)
    found = (
        StreamSession.objects.filter(
            status=StreamSession.Status.ACTIVE, pk__in=speaking.values("session_id")
        )
        .exclude(pk=besides.pk)
        .aggregate(fps=Sum("fps"))
    )
    return found["fps"] or 0


def capacity_now(*, fps: int) -> dict[str, Any]:
    """``GET /capacity``: the workers' measured capacity and how many more sessions of
    ``fps`` fit now (see :mod:`musetalk_site.capacity` for how the numbers relate)."""
    count, reserved = _open_sessions()
    report = capacity_report(
        _capacities(),
        fps=fps,
        target=settings.LIVE_CAPACITY_TARGET,
        reserved_frames_per_s=reserved,
        active_sessions=count,
    )
    return {**report, "admission": settings.LIVE_ADMISSION}


def session_admission_check(*, fps: int, wait_seconds: float = 0.0) -> None:
    """429 when one more session of ``fps`` does not fit; with ``wait_seconds`` (at most
    MAX_WAIT_SECONDS) it polls for room every POLL_SECONDS before refusing. Call it outside
    any transaction that holds locks: it may sleep."""
    if not settings.LIVE_ADMISSION:
        return
    deadline = time.monotonic() + min(max(wait_seconds, 0.0), MAX_WAIT_SECONDS)
    while True:
        refusal = _session_refusal(fps)
        if refusal is None:
            return
        if time.monotonic() + POLL_SECONDS > deadline:
            raise refusal
        time.sleep(POLL_SECONDS)


def _session_refusal(fps: int) -> ApplicationError | None:
    capacities = _capacities()
    _, reserved = _open_sessions()
    target = settings.LIVE_CAPACITY_TARGET
    if session_fits(capacities, target=target, reserved_frames_per_s=reserved, fps=fps):
        return None
    room = available_sessions(
        frames_per_s=total_frames_per_s(capacities),
        target=target,
        reserved_frames_per_s=reserved,
        fps=fps,
    )
    return capacity_error("session", fps=fps, available=room, capacities=capacities)


def stream_admission_check(*, session: StreamSession, wait: bool = False) -> StreamAdmission:
    """Admit an utterance of ``session`` when the workers can make its frames in real time
    beside the other utterances queued or streaming; else 429, or with ``wait`` queue it
    (it stays QUEUED until a worker has room for it) with an estimate of the wait."""
    if not settings.LIVE_ADMISSION:
        return StreamAdmission()
    capacities = _capacities()
    demand = _streams_demand(besides=session)
    target = settings.LIVE_CAPACITY_TARGET
    if stream_fits(capacities, target=target, demand_frames_per_s=demand, fps=session.fps):
        return StreamAdmission()
    if wait:
        return StreamAdmission(queued=True, eta_seconds=retry_after_seconds(capacities))
    _, reserved = _open_sessions()
    room = available_sessions(
        frames_per_s=total_frames_per_s(capacities),
        target=target,
        reserved_frames_per_s=reserved,
        fps=session.fps,
    )
    raise capacity_error("stream", fps=session.fps, available=room, capacities=capacities)


def capacity_error(
    what: str, *, fps: int, available: int, capacities: list[WorkerCapacity]
) -> ApplicationError:
    """The 429 of a refused ``session`` or ``stream``, with Retry-After."""
    retry = retry_after_seconds(capacities)
    return ApplicationError(
        f"The platform is at capacity: no room for another {fps}-fps {what} now; "
        f"retry in {retry} s, or send wait=true.",
        {
            "reason": "capacity",
            "fps": fps,
            "available_sessions": available,
            "retry_after_seconds": retry,
        },
        status=429,
        headers={"Retry-After": str(retry)},
    )
