"""Dramatiq middleware for the worker process: the resident engine and the heartbeat.

The web process imports this module too (the broker is configured there), so nothing
here imports torch at module level: the engine is built in ``after_process_boot``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)


@dataclass
class EngineHolder:
    """What this worker process loaded; one per process."""

    state: dict[str, Any] = field(default_factory=dict)
    engine: Any = None
    ready: threading.Event = field(default_factory=threading.Event)


_holder = EngineHolder()


def get_engine() -> Any:
    """The resident engine of this worker process (built once at boot)."""
    if not _holder.ready.wait(timeout=600):
        raise RuntimeError("the engine did not finish loading")
    if _holder.engine is None:
        raise RuntimeError(_holder.state.get("error", "the engine is not loaded"))
    return _holder.engine


def engine_state() -> dict[str, Any]:
    return dict(_holder.state)


def current_worker_id() -> str:
    """This worker process's id, as written in its heartbeat and on the rows it claims."""
    return f"{socket.gethostname()}-{os.getpid()}"


class EngineMiddleware(Middleware):
    """Builds the inference engine once per worker process."""

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        """Start loading the models; actors wait for them through ``get_engine()``."""
        _holder.state = {"loaded": False, "loading": True}
        threading.Thread(target=_load_engine, name="engine-load", daemon=True).start()


def _load_engine() -> None:
    from musetalk_site import engine_boot

    try:
        _holder.engine, _holder.state = engine_boot.build_engine()
    except Exception as exc:
        logger.exception("engine failed to load")
        _holder.state = {**engine_boot.requested_state(), "error": str(exc), "loaded": False}
    finally:
        _holder.ready.set()


class HeartbeatMiddleware(Middleware):
    """Writes this worker's heartbeat (and engine state) to Redis every few seconds."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker_id = ""
        self._queues: list[str] = []
        self._started_at = time.time()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Start the heartbeat thread."""
        self._worker_id = current_worker_id()
        whitelist = getattr(worker, "consumer_whitelist", None)
        self._queues = sorted(whitelist) if whitelist else ["*"]
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Stop beating and remove this worker's key so /health notices at once."""
        from musetalk_site.heartbeat import beat_delete
        from musetalk_site.redis_conn import redis_client

        self._stop.set()
        try:
            beat_delete(redis_client(), self._worker_id)
        except Exception:
            logger.warning("could not remove the heartbeat key", exc_info=True)

    def _run(self) -> None:
        from django.conf import settings

        interval = settings.WORKER_HEARTBEAT_SECONDS
        beats = 0
        while not self._stop.is_set():
            self._beat(ttl=int(max(60, settings.WORKER_STALE_SECONDS * 4)))
            if beats % 5 == 0:
                self._reap()
            beats += 1
            self._stop.wait(interval)

    def _reap(self) -> None:
        from django.db import close_old_connections

        from musetalk_site.services import orphans_reap

        try:
            orphans_reap()
        except Exception:
            logger.warning("reaping orphaned work failed", exc_info=True)
        finally:
            close_old_connections()

    def _beat(self, *, ttl: int) -> None:
        from musetalk_site.heartbeat import WorkerBeat, beat_write
        from musetalk_site.redis_conn import redis_client

        beat = WorkerBeat(
            worker_id=self._worker_id,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=self._started_at,
            beat_at=time.time(),
            engine=engine_state(),
            queues=self._queues,
        )
        try:
            beat_write(redis_client(), beat, ttl_seconds=ttl)
        except Exception:
            logger.warning("heartbeat write failed", exc_info=True)
