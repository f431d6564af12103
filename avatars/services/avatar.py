"""Avatar preparation: the request (web), the run (worker), re-preparation and deletion."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from avatars.models import AVATAR_ID_VALIDATOR, Avatar
from avatars.services.idle import idle_clip_write
from avatars.services.quota import prepare_quota_check
from avatars.signals import avatar_deleted, avatar_prepared
from inference.config import PrepareConfig
from inference.layout import staging_leftovers
from musetalk_site import realtime
from musetalk_site.broker import message_send, messages_lost
from musetalk_site.engine import current_worker_id, get_engine
from musetalk_site.errors import ApplicationError
from musetalk_site.runs import claimed_run
from musetalk_site.uploads import video_upload_check

logger = logging.getLogger(__name__)


def avatar_dir(avatar: Avatar) -> Path:
    """Where the prepared assets of ``avatar`` live."""
    return Path(settings.MEDIA_ROOT) / avatar.storage_key


def avatar_event(avatar: Avatar, event: str, **extra: Any) -> dict[str, Any]:
    return {
        "event": event,
        "avatar_id": avatar.avatar_id,
        "status": avatar.status,
        "progress": avatar.progress,
        "stage": avatar.stage,
        "error": avatar.error,
        **extra,
    }


def _publish(avatar: Avatar, event: str, **extra: Any) -> None:
    realtime.publish(
        realtime.avatar_group(avatar.owner_id, avatar.avatar_id),
        avatar_event(avatar, event, **extra),
    )


def _enqueue_prepare(avatar: Avatar) -> None:
    pk, revision = avatar.pk, avatar.revision
    transaction.on_commit(lambda: _send_prepare(pk, revision))


def _send_prepare(pk: int, revision: int) -> None:
    from avatars.tasks import avatar_prepare

    message_id = message_send(avatar_prepare, pk, revision)
    # Recorded for avatar_lost_reap; a claim that came first leaves nothing to record.
    Avatar.objects.filter(
        pk=pk, revision=revision, status=Avatar.Status.QUEUED, message_id=""
    ).update(message_id=message_id, sent_at=timezone.now())


def _check_avatar_id(avatar_id: str) -> None:
    try:
        AVATAR_ID_VALIDATOR(avatar_id)
    except Exception:
        raise ApplicationError(
            str(AVATAR_ID_VALIDATOR.message), {"field": "avatar_id", "value": avatar_id[:100]}
        ) from None


def avatar_prepare_request(
    *,
    owner: User,
    avatar_id: str,
    video: File,
    batch_size: int = 20,
    bbox_shift: int = 0,
    force_recreate: bool = False,
    idle_video: File | None = None,
) -> tuple[Avatar, bool]:
    """Store the video (and the optional separate idle clip) and queue the preparation;
    returns (avatar, queued).

    A ready avatar is returned untouched unless ``force_recreate``; its assets keep
    serving while the new preparation runs and are replaced atomically when it succeeds.
    A new preparation without ``idle_video`` drops an earlier idle clip: the idle loop is
    then the avatar's own frames again.
    """
    _check_avatar_id(avatar_id)
    video_upload_check(upload=video)
    if idle_video is not None:
        video_upload_check(upload=idle_video, field="idle_video_file")
    uploads = _Uploads(video=video, idle=idle_video)
    try:
        with transaction.atomic():
            return _prepare_request_locked(
                owner, avatar_id, uploads, batch_size, bbox_shift, force_recreate
            )
    except IntegrityError:
        # Another request created the same avatar_id at the same moment.
        raise ApplicationError(
            f"Avatar {avatar_id!r} is already being prepared.", {"avatar_id": avatar_id}, status=409
        ) from None


@dataclass(frozen=True)
class _Uploads:
    video: File
    idle: File | None

    @property
    def size(self) -> int:
        return (self.video.size or 0) + ((self.idle.size or 0) if self.idle else 0)


def _prepare_request_locked(
    owner: User,
    avatar_id: str,
    uploads: _Uploads,
    batch_size: int,
    bbox_shift: int,
    force_recreate: bool,
) -> tuple[Avatar, bool]:
    avatar = Avatar.objects.select_for_update().filter(owner=owner, avatar_id=avatar_id).first()
    if avatar is not None and avatar.status in (Avatar.Status.QUEUED, Avatar.Status.PREPARING):
        raise ApplicationError(
            f"Avatar {avatar_id!r} is already being prepared ({avatar.status}).",
            {"avatar_id": avatar_id, "status": avatar.status},
            status=409,
        )
    if avatar is not None and avatar.status == Avatar.Status.READY and not force_recreate:
        return avatar, False
    prepare_quota_check(owner=owner, new_avatar=avatar is None, upload_bytes=uploads.size)
    if avatar is None:
        avatar = Avatar(owner=owner, avatar_id=avatar_id)
    old_files = [f.name for f in (avatar.source_video, avatar.idle_video) if f]
    avatar.source_video.save(uploads.video.name or "video.mp4", uploads.video, save=False)
    if uploads.idle is not None:
        avatar.idle_video.save(uploads.idle.name or "idle.mp4", uploads.idle, save=False)
    else:
        avatar.idle_video = ""
    new_files = [f.name for f in (avatar.source_video, avatar.idle_video) if f]
    avatar.batch_size, avatar.bbox_shift = batch_size, bbox_shift
    avatar.status, avatar.progress, avatar.stage, avatar.error = Avatar.Status.QUEUED, 0, "", ""
    avatar.revision += 1
    avatar.queued_at, avatar.started_at, avatar.finished_at = timezone.now(), None, None
    avatar.message_id, avatar.sent_at, avatar.resends = "", None, 0
    try:
        avatar.save()
    except BaseException:
        for name in new_files:  # the row was not written: nothing may point at them
            _delete_media_file(name)
        raise
    for name in set(old_files) - set(new_files):
        transaction.on_commit(partial(_delete_media_file, name))
    _enqueue_prepare(avatar)
    transaction.on_commit(lambda: _publish(avatar, "queued"))
    return avatar, True


def _delete_media_file(name: str | None) -> None:
    if name:
        (Path(settings.MEDIA_ROOT) / name).unlink(missing_ok=True)


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
        message_id="",
        sent_at=None,
        resends=0,
    )
    avatar.refresh_from_db()
    _enqueue_prepare(avatar)
    return avatar


def avatar_prepare_run(*, avatar_pk: int, revision: int) -> None:
    """Run one claimed preparation in this worker's engine (idempotent per revision)."""
    claimed = Avatar.objects.filter(
        pk=avatar_pk, revision=revision, status=Avatar.Status.QUEUED
    ).update(
        status=Avatar.Status.PREPARING,
        started_at=timezone.now(),
        progress=0,
        stage="",
        worker_id=current_worker_id(),
    )
    if not claimed:
        logger.info("avatar %s revision %s: nothing to do (not queued)", avatar_pk, revision)
        return
    avatar = Avatar.objects.get(pk=avatar_pk)
    _publish(avatar, "progress")
    with claimed_run(
        f"avatar {avatar_pk} preparation",
        on_failure=lambda message: _prepare_failed(avatar, revision, message),
        internal_message="internal error during preparation",
    ):
        manifest = _run_engine_prepare(avatar, revision)
        _prepare_succeeded(avatar, revision, manifest)


def _progress_writer(avatar: Avatar, revision: int):
    def report(percent: int, stage: str) -> None:
        Avatar.objects.filter(pk=avatar.pk, revision=revision).update(
            progress=min(percent, 99), stage=stage[:64]
        )
        avatar.progress, avatar.stage = min(percent, 99), stage[:64]
        _publish(avatar, "progress")

    return report


def remove_stale_staging(folder: Path) -> None:
    """Drop staging folders a killed preparation left next to ``folder`` (never a half avatar:
    the engine only renames a finished staging folder into place)."""
    for staging in staging_leftovers(folder):
        shutil.rmtree(staging, ignore_errors=True)


def _run_engine_prepare(avatar: Avatar, revision: int) -> Any:
    engine = get_engine()
    remove_stale_staging(avatar_dir(avatar))  # this revision owns the avatar: claimed above
    config = PrepareConfig(bbox_shift=avatar.bbox_shift, batch_size=avatar.batch_size)
    video = avatar.source_video.name
    assert video is not None  # every preparation request stores the source video first
    manifest = engine.prepare(
        Path(settings.MEDIA_ROOT) / video,
        avatar_dir(avatar),
        config=config,
        progress=_progress_writer(avatar, revision),
    )
    if avatar.idle_video:
        idle_clip_write(
            source=Path(settings.MEDIA_ROOT) / str(avatar.idle_video.name),
            folder=avatar_dir(avatar),
            width=manifest.frame_width,
            height=manifest.frame_height,
            fps=manifest.fps,
        )
    return manifest


def _prepare_succeeded(avatar: Avatar, revision: int, manifest: Any) -> None:

    get_engine().evict(avatar_dir(avatar))
    Avatar.objects.filter(pk=avatar.pk, revision=revision).update(
        status=Avatar.Status.READY,
        progress=100,
        stage="done",
        error="",
        has_assets=True,
        frame_count=manifest.frame_count,
        fps=manifest.fps,
        width=manifest.frame_width,
        height=manifest.frame_height,
        size_bytes=_tree_size(avatar_dir(avatar)),
        face_backend=manifest.face_backend,
        model_profile=str(manifest.model.get("profile", "")),
        finished_at=timezone.now(),
    )
    avatar.refresh_from_db()
    _publish(avatar, "ready")
    avatar_prepared.send(sender=Avatar, avatar=avatar)


def _prepare_failed(avatar: Avatar, revision: int, message: str) -> None:
    Avatar.objects.filter(pk=avatar.pk, revision=revision).update(**_failure(avatar, message))
    avatar.refresh_from_db()
    _publish(avatar, "error", message=avatar.error)


def _failure(avatar: Avatar, message: str) -> dict[str, Any]:
    """The fields of a failed preparation: with earlier assets, the avatar keeps serving them."""
    if avatar.has_assets:
        status, error = Avatar.Status.READY, f"re-preparation failed: {message}"
    else:
        status, error = Avatar.Status.FAILED, message
    return {"status": status, "error": error, "finished_at": timezone.now()}


def _tree_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def avatar_delete(*, avatar: Avatar) -> None:
    """Delete the avatar, its jobs, its files; workers drop it from their caches."""
    from avatars.services.cache import avatar_cache_folder_evict

    folder = avatar_dir(avatar)
    videos = [f.name for f in (avatar.source_video, avatar.idle_video) if f]
    results = [job.result.name for job in avatar.jobs.all() if job.result]
    audio = [job.audio_file.name for job in avatar.jobs.all() if job.audio_file]
    key = str(folder)
    with transaction.atomic():
        avatar.delete()
        transaction.on_commit(lambda: shutil.rmtree(folder, ignore_errors=True))
        for name in [*videos, *results, *audio]:
            transaction.on_commit(partial(_delete_media_file, name))
        transaction.on_commit(lambda: avatar_cache_folder_evict(folder=key))  # every worker
        transaction.on_commit(lambda: avatar_deleted.send(sender=Avatar, avatar=avatar))


WORKER_LOST = "the worker preparing this avatar stopped unexpectedly; please try again"


def _claim_is_orphaned() -> Q:
    grace = timezone.now() - timedelta(seconds=settings.WORKER_STALE_SECONDS)
    return Q(started_at__lt=grace) | Q(started_at__isnull=True)


def avatar_orphans_reap(*, live_worker_ids: set[str]) -> int:
    """Finish preparations whose worker is gone: failed, or back to ready on old assets."""
    stuck = Avatar.objects.filter(status=Avatar.Status.PREPARING).filter(_claim_is_orphaned())
    reaped = 0
    for avatar in stuck.exclude(worker_id__in=live_worker_ids):
        status = Avatar.Status.READY if avatar.has_assets else Avatar.Status.FAILED
        reaped += Avatar.objects.filter(
            pk=avatar.pk, revision=avatar.revision, status=Avatar.Status.PREPARING
        ).update(status=status, error=WORKER_LOST, finished_at=timezone.now())
        avatar.refresh_from_db()
        remove_stale_staging(avatar_dir(avatar))
        _publish(avatar, "error", message=WORKER_LOST)
        logger.warning(
            "avatar %s: worker %s is gone; marked %s", avatar.pk, avatar.worker_id, status
        )
    return reaped


QUEUE_LOST = "the queue lost this preparation {times} times (a worker or Redis restarted)"


def avatar_lost_reap() -> int:
    """Re-send queued preparations whose message the broker lost; after QUEUE_RESEND_LIMIT
    re-sends, fail them (an avatar with earlier assets keeps serving them)."""
    from avatars.tasks import avatar_prepare

    due = timezone.now() - timedelta(seconds=settings.QUEUE_CHECK_AFTER_SECONDS)
    unsent = Q(queued_at__lt=due) | Q(queued_at__isnull=True)
    waited = Q(sent_at__lt=due) | (Q(sent_at__isnull=True) & unsent)
    changed = 0
    queued = Avatar.objects.filter(status=Avatar.Status.QUEUED).filter(waited)
    for avatar in messages_lost(queued, queue_name=avatar_prepare.queue_name):
        if avatar.resends < settings.QUEUE_RESEND_LIMIT:
            changed += _prepare_resend(avatar)
        else:
            changed += _prepare_lost(avatar)
    return changed


def _lost_claim(avatar: Avatar, **fields: Any) -> int:
    """Change a queued revision only as it was read: another worker's maintenance, a claim or
    a new revision in between makes this a no-op."""
    return Avatar.objects.filter(
        pk=avatar.pk,
        revision=avatar.revision,
        status=Avatar.Status.QUEUED,
        message_id=avatar.message_id,
        resends=avatar.resends,
    ).update(**fields)


def _prepare_resend(avatar: Avatar) -> int:
    if not _lost_claim(avatar, message_id="", sent_at=timezone.now(), resends=F("resends") + 1):
        return 0
    logger.warning("avatar %s: its message was lost; sent again", avatar.pk)
    _send_prepare(avatar.pk, avatar.revision)
    return 1


def _prepare_lost(avatar: Avatar) -> int:
    message = QUEUE_LOST.format(times=avatar.resends + 1)
    if not _lost_claim(avatar, **_failure(avatar, message)):
        return 0
    logger.warning("avatar %s: %s", avatar.pk, message)
    avatar.refresh_from_db()
    _publish(avatar, "error", message=avatar.error)
    return 1
