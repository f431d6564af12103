"""Worker heartbeats in Redis: the worker writes, ``/health`` and the dashboard read."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

KEY_PREFIX = "musetalk:worker:"


@dataclass(frozen=True)
class WorkerBeat:
    worker_id: str
    pid: int
    hostname: str
    started_at: float
    beat_at: float
    engine: dict[str, Any] = field(default_factory=dict)
    queues: list[str] = field(default_factory=list)  # ["*"]: every queue
    running: dict[str, int] = field(default_factory=dict)  # queue -> messages being processed

    def age(self, now: float | None = None) -> float:
        return max(0.0, (now if now is not None else time.time()) - self.beat_at)


def beat_write(client: redis.Redis, beat: WorkerBeat, *, ttl_seconds: int) -> None:
    client.set(KEY_PREFIX + beat.worker_id, json.dumps(asdict(beat)), ex=ttl_seconds)


def beat_delete(client: redis.Redis, worker_id: str) -> None:
    client.delete(KEY_PREFIX + worker_id)


def beats_read(client: redis.Redis) -> list[WorkerBeat]:
    """Every worker heartbeat still in Redis, freshest first."""
    keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=100))
    beats = []
    for raw in client.mget(keys) if keys else []:
        if raw is None:
            continue
        try:
            beats.append(WorkerBeat(**json.loads(raw)))
        except (TypeError, ValueError):
            continue
    return sorted(beats, key=lambda beat: beat.beat_at, reverse=True)
