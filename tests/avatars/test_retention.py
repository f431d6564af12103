"""Retention: finished jobs and their files go RESULT_RETENTION_DAYS after they finished, their
uploaded audio UPLOAD_RETENTION_HOURS after; unfinished jobs stay; 0 keeps everything. Worker
maintenance applies it, a bounded batch per run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from avatars.models import GenerationJob
from avatars.services.retention import job_uploads_expire, jobs_expire
from musetalk_site.maintenance import maintenance_run
from tests.avatars.job_files import files_of, job_with_files
from tests.factories import UserFactory

# Not transactional: the rows stay invisible to a live stack's worker, whose own maintenance
# would otherwise apply retention to them first.
pytestmark = pytest.mark.django_db

Status = GenerationJob.Status


@pytest.fixture(autouse=True)
def _retention(settings) -> None:
    settings.RESULT_RETENTION_DAYS = 30
    settings.UPLOAD_RETENTION_HOURS = 24


def _finished(owner, ago: timedelta, status: str = Status.SUCCEEDED) -> GenerationJob:
    return job_with_files(owner, status, finished_at=timezone.now() - ago)


def test_maintenance_deletes_old_jobs_and_old_audio_and_keeps_the_rest(redis_server):
    owner = UserFactory()
    old = _finished(owner, timedelta(days=31))
    old_failed = _finished(owner, timedelta(days=40), Status.FAILED)
    day_old = _finished(owner, timedelta(days=2))
    recent = _finished(owner, timedelta(hours=1))
    queued = job_with_files(owner, Status.QUEUED)
    running = job_with_files(owner, Status.RUNNING)

    maintenance_run()

    for gone in (old, old_failed):
        assert not GenerationJob.objects.filter(pk=gone.pk).exists()
        assert not any(path.exists() for path in files_of(gone))
    audio, video = files_of(day_old)
    day_old.refresh_from_db()
    assert day_old.audio_file.name == "" and not audio.exists()
    assert day_old.result.name and video.exists()
    for kept in (recent, queued, running):
        kept.refresh_from_db()
        assert kept.audio_file.name and kept.result.name
        assert all(path.exists() for path in files_of(kept))


def test_a_second_run_finds_nothing_more_to_do(redis_server):
    owner = UserFactory()
    _finished(owner, timedelta(days=31))
    _finished(owner, timedelta(days=2))
    maintenance_run()
    assert jobs_expire() == 0
    assert job_uploads_expire() == 0


def test_zero_keeps_jobs_and_audio_for_good(redis_server, settings):
    settings.RESULT_RETENTION_DAYS = 0
    settings.UPLOAD_RETENTION_HOURS = 0
    job = _finished(UserFactory(), timedelta(days=3650))
    maintenance_run()
    job.refresh_from_db()
    assert job.audio_file.name and all(path.exists() for path in files_of(job))


def test_each_run_handles_a_bounded_batch_oldest_first():
    owner = UserFactory()
    jobs = [_finished(owner, timedelta(days=31 + n)) for n in range(3)]
    assert jobs_expire(limit=2) == 2
    assert list(GenerationJob.objects.values_list("pk", flat=True)) == [jobs[0].pk]
    assert jobs_expire(limit=2) == 1
    assert jobs_expire(limit=2) == 0


def test_audio_is_deleted_in_bounded_batches_too():
    owner = UserFactory()
    for n in range(3):
        _finished(owner, timedelta(days=2, hours=n))
    assert job_uploads_expire(limit=2) == 2
    assert job_uploads_expire(limit=2) == 1
    assert GenerationJob.objects.filter(audio_file="").count() == 3


def test_a_job_whose_files_are_already_gone_is_still_deleted():
    job = _finished(UserFactory(), timedelta(days=31))
    for path in files_of(job):
        path.unlink()
    assert jobs_expire() == 1
    assert not GenerationJob.objects.filter(pk=job.pk).exists()
