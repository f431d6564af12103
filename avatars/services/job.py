"""Generation jobs: create (web), run (worker), cancel."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from avatars.models import GenerationJob
from avatars.selectors import avatar_get_usable_for_user
from avatars.services.avatar import avatar_dir
from avatars.services.quota import generate_quota_check
from inference.config import GenerateConfig
from musetalk_site import realtime
from musetalk_site.broker import message_send, messages_lost
from musetalk_site.engine import current_worker_id, get_engine
from musetalk_site.errors import ApplicationError
from musetalk_site.ids import new_request_id
from musetalk_site.quotas import quota_minutes_record
from musetalk_site.runs import claimed_run
from musetalk_site.uploads import audio_upload_check

logger = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5


class JobCancelled(Exception):
    """Raised from the engine's cancel hook when a user cancelled the running job."""


def job_event(job: GenerationJob, event: str, **extra: Any) -> dict[str, Any]:
    return {
        "event": event,
        "request_id": job.request_id,
        "status": job.status,
        "progress": job.progress,
        "error": job.error,
        **extra,
    }


def _publish(job: GenerationJob, event: str, **extra: Any) -> None:
    realtime.publish(
        realtime.job_group(job.owner_id, job.request_id), job_event(job, event, **extra)
    )


def job_create(
    *,
    owner: User,
    avatar_id: str,
    audio: File,
    batch_size: int = 2,
    fps: int = 25,
    output_name: str = "",
) -> GenerationJob:
    """Store the audio and queue a video generation from the user's avatar; ``output_name``
    is the name the video is downloaded under."""
    avatar = avatar_get_usable_for_user(user=owner, avatar_id=avatar_id)
    info = audio_upload_check(upload=audio)
    generate_quota_check(owner=owner, audio_seconds=info.duration_s, upload_bytes=audio.size or 0)
    job = GenerationJob(
        owner=owner,
        avatar=avatar,
        request_id=new_request_id(avatar_id),
        batch_size=batch_size,
        fps=fps,
        output_name=output_name,
    )
    job.audio_file.save(audio.name or "audio.wav", audio, save=False)
    with transaction.atomic():
        job.save()
        transaction.on_commit(lambda: _send_generate(job.pk))
    return job


def _send_generate(job_pk: int) -> None:
    from avatars.tasks import job_generate

    message_id = message_send(job_generate, job_pk)
    # Recorded for job_lost_reap; a claim that came first leaves nothing to record.
    GenerationJob.objects.filter(
        pk=job_pk, status=GenerationJob.Status.QUEUED, message_id=""
    ).update(message_id=message_id, sent_at=timezone.now())


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
    if claimed:
        _publish(job, "cancelled")
    return job


def result_name(job: GenerationJob) -> str:
    return f"results/{job.owner_id}/{job.request_id}.mp4"


def job_run(*, job_pk: int) -> None:
    """Generate the video of one claimed job in this worker's engine (idempotent)."""
    claimed = GenerationJob.objects.filter(pk=job_pk, status=GenerationJob.Status.QUEUED).update(
        status=GenerationJob.Status.RUNNING,
        started_at=timezone.now(),
        progress=0,
        worker_id=current_worker_id(),
        attempts=F("attempts") + 1,
    )
    if not claimed:
        logger.info("job %s: nothing to do (not queued)", job_pk)
        return
    job = GenerationJob.objects.select_related("avatar").get(pk=job_pk)
    _publish(job, "progress")
    with claimed_run(
        f"job {job.request_id}",
        on_failure=lambda message: _finish(
            job, GenerationJob.Status.FAILED, event="error", error=message
        ),
        internal_message="internal error",
    ):
        try:
            result = _run_engine_generate(job)
        except JobCancelled:
            _finish(job, GenerationJob.Status.CANCELLED, event="cancelled")
            return
        _succeed(job, result)


def _cancel_checker(job: GenerationJob):
    last = [0.0]

    def cancelled() -> bool:
        now = time.monotonic()
        if now - last[0] < CANCEL_POLL_SECONDS:
            return False
        last[0] = now
        if GenerationJob.objects.filter(pk=job.pk, cancel_requested=True).exists():
            raise JobCancelled()
        return False

    return cancelled


def _progress_writer(job: GenerationJob):
    def report(done: int, total: int) -> None:
        percent = min(99, done * 100 // max(total, 1))
        if done > 1 and percent == job.progress:
            return  # only whole-percent steps reach the database and the followers
        fields: dict[str, Any] = {"progress": percent}
        if done == 1:
            fields["first_frame_at"] = timezone.now()
        GenerationJob.objects.filter(pk=job.pk).update(**fields)
        job.progress = percent
        _publish(job, "progress")

    return report


def _run_engine_generate(job: GenerationJob) -> Any:
    out_path = Path(settings.MEDIA_ROOT) / result_name(job)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    audio = job.audio_file.name
    assert audio is not None  # job_create stores the audio before the row exists
    return get_engine().generate_file(
        avatar_dir(job.avatar),
        Path(settings.MEDIA_ROOT) / audio,
        out_path,
        config=GenerateConfig(batch_size=job.batch_size, fps=job.fps),
        progress=_progress_writer(job),
        cancelled=_cancel_checker(job),
    )


def _succeed(job: GenerationJob, result: Any) -> None:
    quota_minutes_record(user_id=job.owner_id, seconds=result.duration_s)
    GenerationJob.objects.filter(pk=job.pk).update(
        status=GenerationJob.Status.SUCCEEDED,
        progress=100,
        result=result_name(job),
        frame_count=result.frame_count,
        duration_seconds=result.duration_s,
        finished_at=timezone.now(),
    )
    job.refresh_from_db()
    _publish(job, "complete", download_url=f"/generate/{job.request_id}/download")


def _finish(job: GenerationJob, status: str, *, event: str, error: str = "") -> None:
    (Path(settings.MEDIA_ROOT) / result_name(job)).unlink(missing_ok=True)
    GenerationJob.objects.filter(pk=job.pk).update(
        status=status, error=error, finished_at=timezone.now()
    )
    job.refresh_from_db()
    _publish(job, event, message=error)


WORKER_LOST = "the worker generating this video stopped unexpectedly; please try again"


def job_orphans_reap(*, live_worker_ids: set[str]) -> int:
    """Fail running jobs whose worker is gone (no fresh heartbeat)."""
    grace = timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    stuck = GenerationJob.objects.filter(status=GenerationJob.Status.RUNNING, started_at__lt=grace)
    reaped = 0
    for job in stuck.exclude(worker_id__in=live_worker_ids):
        reaped += GenerationJob.objects.filter(
            pk=job.pk, status=GenerationJob.Status.RUNNING
        ).update(status=GenerationJob.Status.FAILED, error=WORKER_LOST, finished_at=timezone.now())
        (Path(settings.MEDIA_ROOT) / result_name(job)).unlink(missing_ok=True)
        job.refresh_from_db()
        _publish(job, "error", message=WORKER_LOST)
        logger.warning("job %s: worker %s is gone; marked failed", job.request_id, job.worker_id)
    return reaped


QUEUE_LOST = "the queue lost this video {times} times (a worker or Redis restarted)"


def job_lost_reap() -> int:
    """Re-send queued jobs whose message the broker lost; fail them after
    QUEUE_RESEND_LIMIT re-sends."""
    from avatars.tasks import job_generate

    due = timezone.now() - timedelta(seconds=settings.QUEUE_CHECK_AFTER_SECONDS)
    waited = Q(sent_at__lt=due) | Q(sent_at__isnull=True, queued_at__lt=due)
    changed = 0
    queued = GenerationJob.objects.filter(status=GenerationJob.Status.QUEUED).filter(waited)
    for job in messages_lost(queued, queue_name=job_generate.queue_name):
        if job.resends < settings.QUEUE_RESEND_LIMIT:
            changed += _resend(job)
        else:
            changed += _lost(job)
    return changed


def _lost_claim(job: GenerationJob, **fields: Any) -> int:
    """Change a queued job only as it was read: another worker's maintenance, a claim or a
    cancellation in between makes this a no-op."""
    return GenerationJob.objects.filter(
        pk=job.pk,
        status=GenerationJob.Status.QUEUED,
        message_id=job.message_id,
        resends=job.resends,
    ).update(**fields)


def _resend(job: GenerationJob) -> int:
    if not _lost_claim(job, message_id="", sent_at=timezone.now(), resends=F("resends") + 1):
        return 0
    logger.warning("job %s: its message was lost; sent again", job.request_id)
    _send_generate(job.pk)
    return 1


def _lost(job: GenerationJob) -> int:
    message = QUEUE_LOST.format(times=job.resends + 1)
    now = timezone.now()
    if not _lost_claim(job, status=GenerationJob.Status.FAILED, error=message, finished_at=now):
        return 0
    logger.warning("job %s: %s", job.request_id, message)
    job.refresh_from_db()
    _publish(job, "error", message=message)
    return 1
