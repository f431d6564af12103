"""The avatars app's part in worker maintenance (connected in ``AppConfig.ready()``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.dispatch import receiver

from avatars.selectors import avatar_usage_for_user
from avatars.services.avatar import avatar_lost_reap, avatar_orphans_reap
from avatars.services.job import job_lost_reap, job_orphans_reap
from avatars.services.retention import job_uploads_expire, jobs_expire
from musetalk_site.maintenance import worker_maintenance
from musetalk_site.quotas import quota_usage_collect


@receiver(worker_maintenance, dispatch_uid="avatars.orphans_reap")
def orphans_reap(sender: Any, *, live_worker_ids: set[str], **kwargs: Any) -> int:
    """Preparations and videos whose worker died are finished with an error."""
    reaped = avatar_orphans_reap(live_worker_ids=live_worker_ids)
    return reaped + job_orphans_reap(live_worker_ids=live_worker_ids)


@receiver(worker_maintenance, dispatch_uid="avatars.lost_reap")
def lost_reap(sender: Any, **kwargs: Any) -> int:
    """Queued preparations and videos whose message the broker lost are sent again, and
    failed once they were re-sent QUEUE_RESEND_LIMIT times."""
    return avatar_lost_reap() + job_lost_reap()


@receiver(worker_maintenance, dispatch_uid="avatars.retention")
def retention(sender: Any, **kwargs: Any) -> int:
    """Finished jobs are deleted with their files RESULT_RETENTION_DAYS after they finished,
    their uploaded audio UPLOAD_RETENTION_HOURS after (a bounded batch per run)."""
    return jobs_expire() + job_uploads_expire()


@receiver(quota_usage_collect, dispatch_uid="avatars.quota_usage")
def quota_usage(sender: Any, *, user: User, **kwargs: Any) -> dict[str, int]:
    """The user's avatars and the storage they and their videos take."""
    return avatar_usage_for_user(user=user)
