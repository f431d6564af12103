"""What sessions do when the apps below them change (connected in ``AppConfig.ready()``)."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import User
from django.dispatch import receiver

from avatars.models import Avatar
from avatars.signals import avatar_deleted, avatar_prepared
from musetalk_site.maintenance import worker_maintenance
from musetalk_site.quotas import quota_usage_collect
from sessions_app.hls import hls_avatar_files_remove, hls_idle_build
from sessions_app.selectors import session_usage_for_user
from sessions_app.services import sessions_expire, stream_orphans_reap
from sessions_app.services.stream import stream_lost_reap

logger = logging.getLogger(__name__)


@receiver(avatar_deleted, sender=Avatar, dispatch_uid="sessions_app.avatar_deleted")
def avatar_files_remove(sender: type[Avatar], *, avatar: Avatar, **kwargs: Any) -> None:
    """Files derived from a deleted avatar (its HLS idle parts) go with it."""
    hls_avatar_files_remove(avatar=avatar)


@receiver(avatar_prepared, sender=Avatar, dispatch_uid="sessions_app.avatar_prepared")
def avatar_idle_build(sender: type[Avatar], *, avatar: Avatar, **kwargs: Any) -> None:
    """Cut the new idle loop into HLS parts now, in the worker that prepared it, so that
    the first playlist finds them; the parts of the previous idle loop go."""
    try:
        hls_idle_build(avatar=avatar)
    except Exception:
        # The avatar is ready whatever happens here: its first session asks again.
        logger.exception("avatar %s: building the HLS idle parts failed", avatar.pk)


@receiver(worker_maintenance, dispatch_uid="sessions_app.maintenance")
def sessions_maintain(sender: Any, *, live_worker_ids: set[str], **kwargs: Any) -> int:
    """Utterances whose worker died end with an error event; idle sessions expire."""
    return stream_orphans_reap(live_worker_ids=live_worker_ids) + sessions_expire()


@receiver(worker_maintenance, dispatch_uid="sessions_app.lost_reap")
def streams_lost_fail(sender: Any, **kwargs: Any) -> int:
    """Queued utterances whose message the broker lost end with an error event, which frees
    their session for the next one."""
    return stream_lost_reap()


@receiver(quota_usage_collect, dispatch_uid="sessions_app.quota_usage")
def quota_usage(sender: Any, *, user: User, **kwargs: Any) -> dict[str, int]:
    """The user's open sessions."""
    return session_usage_for_user(user=user)
