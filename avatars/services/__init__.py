"""Writes for avatars and generation jobs."""

from avatars.services.avatar import (
    avatar_delete,
    avatar_prepare_request,
    avatar_prepare_run,
    avatar_reprepare,
)
from avatars.services.cache import (
    avatar_cache_clear,
    avatar_cache_evict_run,
    avatar_cache_warm,
    avatar_cache_warm_run,
    avatar_cache_warm_wait,
)
from avatars.services.job import job_cancel, job_create, job_run
from avatars.services.retention import job_delete
from avatars.services.thumbnail import avatar_thumbnail

__all__ = [
    "avatar_cache_clear",
    "avatar_cache_evict_run",
    "avatar_cache_warm",
    "avatar_cache_warm_run",
    "avatar_cache_warm_wait",
    "avatar_delete",
    "avatar_prepare_request",
    "avatar_prepare_run",
    "avatar_reprepare",
    "avatar_thumbnail",
    "job_cancel",
    "job_create",
    "job_delete",
    "job_run",
]
