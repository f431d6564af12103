"""Which worker process takes a live utterance, and how a message reaches one worker.

Several generating worker processes (on one host or many) share one Redis and one database.
Each of them consumes, beside the shared queues, a queue of its own: ``worker.<slot>``, where
the slot is a short hash of its worker id (:func:`worker_queue`); the worker declares it when
it boots (``musetalk_site.worker.EngineMiddleware``) and lists it in its heartbeat. The web
sends there what must reach that process: an utterance placed on it, and the cache commands
(warm, evict) that go to every generating worker.

The placement rules, written down once (:func:`stream_worker_choose`):

- Candidates are the live workers (fresh heartbeat, engine loaded) that take streams and
  consume their own queue.
- A candidate has room when it has measured its capacity and its free frames/s
  (``frames_per_s * LIVE_CAPACITY_TARGET - live_frames_per_s``) is at least the session's fps.
- Among the candidates with room, one whose cache holds the avatar wins; then the one with
  the most free frames/s.
- When no measured candidate has room (admission let the utterance in all the same: an idle
  platform admits one), the least loaded one takes it: the most free frames/s, warm first
  on a tie; loading an avatar costs once, an overloaded worker slows every stream on it.
- Unknown capacity: when no candidate has measured yet, a candidate whose cache holds the
  avatar is taken (the cache is all that is known); otherwise nobody is chosen.
- Nobody chosen (no candidate, nothing known): the shared ``stream`` queue, where the first
  worker with a free thread takes it, as with a single worker.

Heartbeats are a few seconds old, so two utterances placed at the same moment may both go to
the same worker; admission's headroom (``LIVE_CAPACITY_TARGET``) absorbs that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from django.conf import settings

from musetalk_site.capacity import serves_streams, worker_capacity
from musetalk_site.heartbeat import WorkerBeat, beats_read
from musetalk_site.redis_conn import redis_client

WORKER_QUEUE_PREFIX = "worker."
# A worker with any of these queues (or all, "*") generates: it holds an avatar cache.
GENERATING_QUEUES = ("generate", "stream")


def worker_queue(worker_id: str) -> str:
    """The queue only ``worker_id`` consumes (short: a message id that names it fits in 64)."""
    return WORKER_QUEUE_PREFIX + hashlib.sha1(worker_id.encode()).hexdigest()[:12]


def is_worker_queue(queue_name: str) -> bool:
    return queue_name.startswith(WORKER_QUEUE_PREFIX)


def generates(queues: Iterable[str] | None) -> bool:
    """Whether a worker consuming ``queues`` (None or ``"*"``: all) generates."""
    found = set(queues or ["*"])
    return "*" in found or bool(found & set(GENERATING_QUEUES))


def _has_own_queue(worker: Mapping[str, Any]) -> bool:
    queues = worker.get("queues") or ["*"]
    return "*" in queues or worker_queue(str(worker.get("worker_id", ""))) in queues


def _cached(worker: Mapping[str, Any], folder: str) -> bool:
    entries = (worker.get("engine") or {}).get("cache", {}).get("entries", {})
    return folder in entries


def stream_worker_choose(
    workers: Iterable[Mapping[str, Any]], *, folder: str, fps: int, target: float
) -> str | None:
    """The id of the live worker that should stream an utterance of ``fps`` for the avatar
    prepared in ``folder``, or None for the shared queue (the module's rules)."""
    folder = str(Path(folder))
    candidates = [w for w in workers if serves_streams(w) and _has_own_queue(w)]
    measured: list[tuple[float, bool, str]] = []  # (free frames/s, warm, id)
    for worker in candidates:
        capacity = worker_capacity(worker)
        if capacity.measured:
            free = capacity.frames_per_s * target - capacity.live_frames_per_s
            measured.append((free, _cached(worker, folder), capacity.worker_id))
    room = [(warm, free, worker_id) for free, warm, worker_id in measured if free >= fps]
    if room:
        return max(room)[2]
    if measured:
        return max(measured)[2]  # all full: the least loaded
    warm = [str(w["worker_id"]) for w in candidates if _cached(w, folder)]
    return warm[0] if warm else None


def stream_queue(*, folder: str, fps: int) -> str | None:
    """The queue to send an utterance to: the chosen worker's own, or None (the shared one)."""
    workers = _live_workers()
    chosen = stream_worker_choose(
        workers, folder=folder, fps=fps, target=settings.LIVE_CAPACITY_TARGET
    )
    return worker_queue(chosen) if chosen else None


def cache_worker_queues() -> list[str]:
    """The own queues of the live generating workers: where cache commands go."""
    workers = _live_workers()
    return [
        worker_queue(str(w["worker_id"]))
        for w in workers
        if generates(w.get("queues")) and _has_own_queue(w)
    ]


def live_worker_queues() -> set[str]:
    """The own queues of every worker whose heartbeat is fresh (loaded or not): a message
    waiting in any other worker queue will never be taken."""
    return {worker_queue(beat.worker_id) for beat in _fresh_beats()}


def _fresh_beats() -> list[WorkerBeat]:
    beats = beats_read(redis_client())
    return [beat for beat in beats if beat.age() <= settings.WORKER_STALE_SECONDS]


def _live_workers() -> list[dict[str, Any]]:
    """The fresh workers whose engine is loaded, as ``musetalk_site.health`` details them
    (that module is not imported here: the worker middleware imports this one before
    Django's apps are ready)."""
    return [
        {"worker_id": beat.worker_id, "queues": beat.queues, "engine": beat.engine}
        for beat in _fresh_beats()
        if beat.engine.get("loaded")
    ]
