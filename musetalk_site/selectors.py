"""Platform-level reads."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from avatars.models import Avatar, GenerationJob
from avatars.services.avatar import avatar_dir
from musetalk_site.engine_stats import active_requests, cache_stats, gpu_stats
from musetalk_site.health import check_worker, engine_state, live_workers
from sessions_app.models import StreamSession


def dashboard_summary(*, user: User) -> dict[str, Any]:
    """What the signed-in user sees on the dashboard: only their own rows."""
    return {
        "avatars": Avatar.objects.filter(owner=user).order_by("-updated_at")[:50],
        "jobs": GenerationJob.objects.filter(owner=user).select_related("avatar")[:20],
        "sessions": StreamSession.objects.filter(
            owner=user, status=StreamSession.Status.ACTIVE
        ).select_related("avatar")[:20],
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
