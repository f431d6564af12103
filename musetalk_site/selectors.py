"""Platform-level reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User

from avatars.models import Avatar, GenerationJob
from avatars.services.avatar import avatar_dir
from avatars.services.thumbnail import avatar_has_still
from musetalk_site.engine_stats import active_requests, cache_stats, gpu_stats
from musetalk_site.health import check_worker, engine_state, live_workers
from sessions_app.models import StreamSession


@dataclass(frozen=True)
class AvatarCard:
    avatar: Avatar
    has_still: bool  # its thumbnail can be shown


def dashboard_summary(*, user: User) -> dict[str, Any]:
    """What the signed-in user sees on the dashboard: only their own rows."""
    return {
        "avatars": [
            AvatarCard(avatar, has_still=avatar_has_still(avatar=avatar))
            for avatar in Avatar.objects.filter(owner=user).order_by("-updated_at")[:50]
        ],
        "jobs": GenerationJob.objects.filter(owner=user).select_related("avatar")[:20],
        "sessions": StreamSession.objects.filter(
            owner=user, status=StreamSession.Status.ACTIVE
        ).select_related("avatar")[:20],
        "upload_limits": {
            "max_bytes": settings.MAX_VIDEO_UPLOAD_BYTES,
            "max_mb": settings.MAX_VIDEO_UPLOAD_BYTES // (1024 * 1024),
            "max_seconds": settings.MAX_VIDEO_SECONDS,
        },
    }


def _avatar_names(user: User) -> dict[str, str]:
    """The user's avatar folders (as the engines' caches name them) -> their avatar ids."""
    return {
        str(avatar_dir(avatar)): avatar.avatar_id for avatar in Avatar.objects.filter(owner=user)
    }


def site_cache_stats(*, user: User) -> dict[str, Any]:
    """The seed API's ``/stats/cache``: the workers' caches; only ``user``'s avatars by name."""
    return cache_stats(live_workers(check_worker(True)), names=_avatar_names(user))


def site_stats(*, user: User) -> dict[str, Any]:
    """The seed API's ``/stats``: the generating engine's memory, the caches and the requests
    running on the workers (all users), and ``user``'s own video requests."""
    worker = check_worker(True)
    workers = live_workers(worker)
    return {
        "gpu": gpu_stats(engine_state(worker)),
        "cache": cache_stats(workers, names=_avatar_names(user)),
        "active_requests": active_requests(workers),
        "total_requests": GenerationJob.objects.filter(owner=user).count(),
        "workers": [
            {"worker_id": item["worker_id"], "queues": item["queues"], "running": item["running"]}
            for item in workers
        ],
    }
