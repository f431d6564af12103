"""The avatars app's part in worker maintenance (connected in ``AppConfig.ready()``)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from avatars.services.avatar import avatar_orphans_reap
from avatars.services.job import job_orphans_reap
from musetalk_site.maintenance import worker_maintenance


@receiver(worker_maintenance, dispatch_uid="avatars.orphans_reap")
def orphans_reap(sender: Any, *, live_worker_ids: set[str], **kwargs: Any) -> int:
    """Preparations and videos whose worker died are finished with an error."""
    reaped = avatar_orphans_reap(live_worker_ids=live_worker_ids)
    return reaped + job_orphans_reap(live_worker_ids=live_worker_ids)
