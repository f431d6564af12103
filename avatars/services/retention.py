"""Deleting generation jobs and their files: by their owner (:func:`job_delete`), or once the
retention settings say so (:func:`jobs_expire`, :func:`job_uploads_expire`, run by worker
maintenance).

A finished job never changes again, so deleting one races nothing. Files go before the row
that names them: a crash in between leaves a row whose file is gone (its download answers
409, the next maintenance run finishes the work), never a file that nothing names. Each
maintenance run handles at most ``RETENTION_BATCH`` jobs per step, so a run stays short
however much is due; the rest goes in the next runs.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from avatars.models import GenerationJob
from musetalk_site.errors import ApplicationError

logger = logging.getLogger(__name__)

FINISHED = (
    GenerationJob.Status.SUCCEEDED,
    GenerationJob.Status.FAILED,
    GenerationJob.Status.CANCELLED,
)
RETENTION_BATCH = 200


def job_delete(*, job: GenerationJob) -> None:
    """Delete a finished job with its uploaded audio and its video; a queued or running job
    must be cancelled first (409)."""
    if job.status not in FINISHED:
        raise ApplicationError(
            f"Job {job.request_id} is {job.status}; cancel it first, then delete it.",
            {"request_id": job.request_id, "status": job.status},
            status=409,
        )
    _media_delete(job.audio_file.name, job.result.name)
    GenerationJob.objects.filter(pk=job.pk, status__in=FINISHED).delete()


def jobs_expire(*, now: datetime | None = None, limit: int = RETENTION_BATCH) -> int:
    """Delete the jobs that finished more than RESULT_RETENTION_DAYS ago, with their files;
    returns how many rows went."""
    days = settings.RESULT_RETENTION_DAYS
    if days == 0:
        return 0
    due = _finished_before((now or timezone.now()) - timedelta(days=days))
    expired = 0
    for pk, audio, result in due.values_list("pk", "audio_file", "result")[:limit]:
        _media_delete(audio, result)
        expired += GenerationJob.objects.filter(pk=pk).delete()[0]
    if expired:
        logger.info("retention: deleted %d jobs finished over %d days ago", expired, days)
    return expired


def job_uploads_expire(*, now: datetime | None = None, limit: int = RETENTION_BATCH) -> int:
    """Delete the uploaded audio of the jobs that finished more than UPLOAD_RETENTION_HOURS
    ago (the row stays); returns how many rows changed."""
    hours = settings.UPLOAD_RETENTION_HOURS
    if hours == 0:
        return 0
    due = _finished_before((now or timezone.now()) - timedelta(hours=hours)).exclude(audio_file="")
    expired = 0
    for pk, audio in due.values_list("pk", "audio_file")[:limit]:
        _media_delete(audio)
        expired += GenerationJob.objects.filter(pk=pk, audio_file=audio).update(audio_file="")
    return expired


def _finished_before(cutoff: datetime) -> QuerySet[GenerationJob]:
    """Finished jobs, oldest first."""
    jobs = GenerationJob.objects.filter(status__in=FINISHED, finished_at__lt=cutoff)
    return jobs.order_by("finished_at")


def _media_delete(*names: str | None) -> None:
    for name in names:
        if name:
            (Path(settings.MEDIA_ROOT) / name).unlink(missing_ok=True)
