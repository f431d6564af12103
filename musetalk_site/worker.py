"""Dramatiq middleware for the worker process: the resident engine, heartbeat, maintenance.

The web process configures the broker too, so it imports this module: nothing here imports
torch or an app at module level. The engine is built in ``after_process_boot``; the apps
take it from :mod:`musetalk_site.engine` and do their maintenance as receivers of
:data:`musetalk_site.maintenance.worker_maintenance`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import dramatiq
from django.conf import settings
from django.db import close_old_connections
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from musetalk_site.engine import (
    current_worker_id,
    engine_install,
    engine_loading,
    engine_state,
    installed_engine,
    requested_state,
)
from musetalk_site.heartbeat import WorkerBeat, beat_delete, beat_write
from musetalk_site.maintenance import maintenance_run
from musetalk_site.placement import generates, worker_queue
from musetalk_site.redis_conn import redis_client

logger = logging.getLogger(__name__)


class EngineMiddleware(Middleware):
    """Builds the inference engine once per worker process."""

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        """Start loading the models; actors wait for them through ``get_engine()``."""
        engine_loading({"loaded": False, "loading": True})
        threading.Thread(target=_load_engine, name="engine-load", daemon=True).start()

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """A generating worker also consumes a queue of its own, where the web places
        utterances on it and sends every worker its cache commands (musetalk_site.placement).
        Before the boot: the worker starts a consumer for every queue declared by then, and
        the heartbeat's boot hook lists the queue with the others."""
        whitelist: set[str] | None = worker.consumer_whitelist or None
        if not generates(whitelist):
            return
        queue = worker_queue(current_worker_id())
        if whitelist is not None:
            whitelist.add(queue)
        broker.declare_queue(queue)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Let the live streams in the engine finish (their messages only started them),
        for at most WORKER_SHUTDOWN_SECONDS; what is left is failed by the orphan sweep."""
        engine = installed_engine()
        if engine is not None and not engine.wait_idle(settings.WORKER_SHUTDOWN_SECONDS):
            logger.warning("shutting down with live streams still open")


def _load_engine() -> None:
    try:
        # Imported here: the engine (torch) exists only in worker processes.
        from musetalk_site import engine_boot

        engine_install(*engine_boot.build_engine())
    except Exception as exc:
        logger.exception("engine failed to load")
        engine_install(None, {**requested_state(), "error": str(exc), "loaded": False})


class _Periodic(Middleware):
    """Runs ``self.tick()`` every ``interval()`` seconds in a thread of its own."""

    name = "periodic"

    def __init__(self) -> None:
        self._stop = threading.Event()

    def interval(self) -> float:
        raise NotImplementedError

    def tick(self) -> None:
        raise NotImplementedError

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Start the thread."""
        threading.Thread(target=self._run, name=self.name, daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Stop the thread after its current tick."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            _guarded(self.tick, self.name)
            self._stop.wait(self.interval())


def _guarded(step: Callable[[], object], name: str) -> None:
    try:
        step()
    except Exception:
        logger.warning("%s failed", name, exc_info=True)
    finally:
        close_old_connections()


class HeartbeatMiddleware(_Periodic):
    """Writes this worker's heartbeat (its engine's state, the messages it is processing) to
    Redis every few seconds.

    It does nothing else: a slow step here would let other workers think this one is dead.
    """

    name = "heartbeat"

    def __init__(self) -> None:
        super().__init__()
        self._worker_id = ""
        self._queues: list[str] = []
        self._started_at = time.time()
        self._lock = threading.Lock()
        # By message id: a message skipped by a middleware before this one never reached
        # before_process_message, and must not be taken off a count.
        self._running: dict[str, str] = {}  # message id -> queue

    def interval(self) -> float:
        return float(settings.WORKER_HEARTBEAT_SECONDS)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Start the heartbeat thread."""
        self._worker_id = current_worker_id()
        whitelist = getattr(worker, "consumer_whitelist", None)
        self._queues = sorted(whitelist) if whitelist else ["*"]
        super().after_worker_boot(broker, worker)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Stop beating and remove this worker's key so /health notices at once."""
        super().before_worker_shutdown(broker, worker)
        _guarded(lambda: beat_delete(redis_client(), self._worker_id), "heartbeat removal")

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        """Count the message as running on its queue."""
        with self._lock:
            self._running[message.message_id] = message.queue_name

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        """The message is no longer running."""
        with self._lock:
            self._running.pop(message.message_id, None)

    after_skip_message = after_process_message

    def running(self) -> dict[str, int]:
        """Messages being processed now, by queue."""
        counts: dict[str, int] = {}
        with self._lock:
            for queue in self._running.values():
                counts[queue] = counts.get(queue, 0) + 1
        return counts

    def tick(self) -> None:
        beat = WorkerBeat(
            worker_id=self._worker_id,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=self._started_at,
            beat_at=time.time(),
            engine=engine_state(),
            queues=self._queues,
            running=self.running(),
        )
        ttl = int(max(60, settings.WORKER_STALE_SECONDS * 4))
        beat_write(redis_client(), beat, ttl_seconds=ttl)


class MaintenanceMiddleware(_Periodic):
    """Runs the apps' maintenance (reaping orphaned work, expiring sessions) in its own thread."""

    name = "maintenance"

    def interval(self) -> float:
        return float(settings.WORKER_MAINTENANCE_SECONDS)

    def tick(self) -> None:
        maintenance_run()
