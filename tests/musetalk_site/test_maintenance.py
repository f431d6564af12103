"""Worker maintenance is a signal the apps connect to, run in a thread of its own."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from avatars.models import Avatar
from musetalk_site.heartbeat import beats_read
from musetalk_site.maintenance import maintenance_run, worker_maintenance
from musetalk_site.redis_conn import redis_client
from musetalk_site.worker import HeartbeatMiddleware, MaintenanceMiddleware
from sessions_app.models import StreamRequest
from tests.factories import AvatarFactory, StreamRequestFactory

# Not transactional: the rows stay invisible to a live stack's worker, whose own maintenance
# would otherwise reap them first.
pytestmark = pytest.mark.django_db


def _long_ago() -> Any:
    return timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS + 5)


def test_each_app_reaps_its_own_orphans_through_the_signal(redis_server: str) -> None:
    avatar = AvatarFactory(status=Avatar.Status.PREPARING, worker_id="gone", started_at=_long_ago())
    request = StreamRequestFactory(
        status=StreamRequest.Status.STREAMING, worker_id="gone", started_at=_long_ago()
    )

    assert maintenance_run() == 2

    avatar.refresh_from_db(), request.refresh_from_db()
    assert avatar.status == Avatar.Status.FAILED
    assert request.status == StreamRequest.Status.FAILED


def test_a_failing_step_does_not_stop_the_others(redis_server: str) -> None:
    def broken(sender: Any, **kwargs: Any) -> int:
        raise RuntimeError("broken step")

    def counted(sender: Any, *, live_worker_ids: set[str], **kwargs: Any) -> int:
        return 3

    worker_maintenance.connect(broken, dispatch_uid="test.broken")
    worker_maintenance.connect(counted, dispatch_uid="test.counted")
    try:
        assert maintenance_run() == 3
    finally:
        worker_maintenance.disconnect(dispatch_uid="test.broken")
        worker_maintenance.disconnect(dispatch_uid="test.counted")


def test_slow_maintenance_never_delays_the_heartbeat(redis_server: str) -> None:
    """A heartbeat that waited for maintenance would let other workers reap live work."""
    release = threading.Event()

    def slow(sender: Any, **kwargs: Any) -> int:
        release.wait(10)
        return 0

    worker_maintenance.connect(slow, dispatch_uid="test.slow")
    worker = SimpleNamespace(consumer_whitelist=None)
    heartbeat, maintenance = HeartbeatMiddleware(), MaintenanceMiddleware()
    try:
        maintenance.after_worker_boot(None, worker)  # type: ignore[arg-type]
        heartbeat.after_worker_boot(None, worker)  # type: ignore[arg-type]
        beats = []
        for _ in range(4):  # WORKER_HEARTBEAT_SECONDS is 1 in the tests
            time.sleep(1.2)
            beats.append(max(beat.beat_at for beat in beats_read(redis_client())))
        assert len(set(beats)) >= 3, beats  # it kept beating while maintenance hung
    finally:
        release.set()
        heartbeat.before_worker_shutdown(None, worker)  # type: ignore[arg-type]
        maintenance.before_worker_shutdown(None, worker)  # type: ignore[arg-type]
        worker_maintenance.disconnect(dispatch_uid="test.slow")
