"""Writes for avatars and generation jobs."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from avatars.models import Avatar, GenerationJob
from musetalk_site.errors import ApplicationError

logger = logging.getLogger(__name__)


def _enqueue_prepare(avatar: Avatar) -> None:
    from avatars.tasks import avatar_prepare

    pk, revision = avatar.pk, avatar.revision
    transaction.on_commit(lambda: avatar_prepare.send(pk, revision))


@transaction.atomic
def avatar_reprepare(*, avatar: Avatar) -> Avatar:
    """Queue a fresh preparation of ``avatar`` from its stored source video.

    The previous assets (if any) keep serving until the new preparation succeeds.
    """
    if not avatar.source_video:
        raise ApplicationError(
            f"Avatar {avatar.avatar_id!r} has no source video to prepare from.",
            {"avatar_id": avatar.avatar_id},
        )
    if avatar.status in (Avatar.Status.QUEUED, Avatar.Status.PREPARING):
        raise ApplicationError(
            f"Avatar {avatar.avatar_id!r} is already {avatar.status}.",
            {"avatar_id": avatar.avatar_id, "status": avatar.status},
            status=409,
        )
    Avatar.objects.filter(pk=avatar.pk).update(
        status=Avatar.Status.QUEUED,
        progress=0,
        stage="",
        error="",
        revision=F("revision") + 1,
        queued_at=timezone.now(),
        started_at=None,
        finished_at=None,
    )
    avatar.refresh_from_db()
    _enqueue_prepare(avatar)
    return avatar


def job_cancel(*, job: GenerationJob) -> GenerationJob:
    """Cancel a queued job at once; ask a running job to stop after its current batch."""
    now = timezone.now()
    claimed = GenerationJob.objects.filter(pk=job.pk, status=GenerationJob.Status.QUEUED).update(
        status=GenerationJob.Status.CANCELLED, cancel_requested=True, finished_at=now
    )
    if not claimed:
        GenerationJob.objects.filter(pk=job.pk, status=GenerationJob.Status.RUNNING).update(
            cancel_requested=True
        )
    job.refresh_from_db()
    if job.status not in (GenerationJob.Status.CANCELLED, GenerationJob.Status.RUNNING):
        raise ApplicationError(
            f"Job {job.request_id} has already {job.status}.",
            {"request_id": job.request_id, "status": job.status},
            status=409,
        )
    return job
