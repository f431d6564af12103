from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from avatars.models import Avatar, GenerationJob
from avatars.services.avatar import avatar_dir, avatar_orphans_reap
from avatars.services.job import job_orphans_reap
from tests.factories import AvatarFactory, GenerationJobFactory

pytestmark = pytest.mark.django_db


def _long_ago():
    return timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS + 5)


def test_it_fails_preparations_of_dead_workers_and_removes_their_staging(redis_server):
    dead = AvatarFactory(status=Avatar.Status.PREPARING, worker_id="host-1", started_at=_long_ago())
    alive = AvatarFactory(
        status=Avatar.Status.PREPARING, worker_id="host-2", started_at=_long_ago()
    )
    serving = AvatarFactory(
        status=Avatar.Status.PREPARING, worker_id="host-1", started_at=_long_ago(), has_assets=True
    )
    staging = avatar_dir(dead).with_name(f".{dead.avatar_id}.tmp-deadbeef")
    staging.mkdir(parents=True)
    assert avatar_orphans_reap(live_worker_ids={"host-2"}) == 2
    dead.refresh_from_db(), alive.refresh_from_db(), serving.refresh_from_db()
    assert dead.status == Avatar.Status.FAILED and "stopped unexpectedly" in dead.error
    assert alive.status == Avatar.Status.PREPARING
    assert serving.status == Avatar.Status.READY  # the previous assets keep serving
    assert not staging.exists()


def test_it_fails_running_jobs_of_dead_workers_but_not_fresh_claims(redis_server):
    dead = GenerationJobFactory(
        status=GenerationJob.Status.RUNNING, worker_id="host-1", started_at=_long_ago()
    )
    just_claimed = GenerationJobFactory(
        status=GenerationJob.Status.RUNNING, worker_id="host-1", started_at=timezone.now()
    )
    partial = Path(settings.MEDIA_ROOT) / f"results/{dead.owner_id}/{dead.request_id}.mp4"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"half")
    assert job_orphans_reap(live_worker_ids=set()) == 1
    dead.refresh_from_db(), just_claimed.refresh_from_db()
    assert dead.status == GenerationJob.Status.FAILED and dead.finished_at is not None
    assert just_claimed.status == GenerationJob.Status.RUNNING
    assert not partial.exists()
