"""Worker maintenance as a signal: each app connects its own steps in ``AppConfig.ready()``.

Every worker process sends :data:`worker_maintenance` every ``WORKER_MAINTENANCE_SECONDS``
from a thread of its own (``musetalk_site.worker.MaintenanceMiddleware``). Receivers take
``live_worker_ids`` (the workers whose heartbeat is fresh: work claimed by any other worker is
orphaned) and return how many rows they changed. A receiver that raises is logged and the
others still run. Nothing here knows which apps exist.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.dispatch import Signal

from musetalk_site.heartbeat import beats_read
from musetalk_site.redis_conn import redis_client

logger = logging.getLogger(__name__)

worker_maintenance = Signal()


def live_worker_ids() -> set[str]:
    """Ids of workers whose heartbeat is fresh."""
    beats = beats_read(redis_client())
    return {b.worker_id for b in beats if b.age() <= settings.WORKER_STALE_SECONDS}


def maintenance_run() -> int:
    """Run every connected maintenance step once; returns the rows they changed in all."""
    live = live_worker_ids()
    changed = 0
    for receiver, result in worker_maintenance.send_robust(sender=None, live_worker_ids=live):
        if isinstance(result, BaseException):
            logger.warning("maintenance step %s failed", receiver, exc_info=result)
        elif isinstance(result, int):
            changed += result
    return changed
