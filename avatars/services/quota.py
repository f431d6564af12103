"""The quotas a preparation or a video counts against, checked before anything is stored."""

from __future__ import annotations

from django.contrib.auth.models import User

from avatars.selectors import avatar_count_for_user, storage_bytes_for_user
from musetalk_site.quotas import (
    quota_avatars_check,
    quota_limits_for_user,
    quota_minutes_check,
    quota_owner_lock,
    quota_storage_check,
)


def prepare_quota_check(*, owner: User, new_avatar: bool, upload_bytes: int) -> None:
    """403 when a new avatar would pass the avatar quota, or the video the storage quota.

    Inside the preparation's transaction: the owner's requests wait for each other here.
    """
    limits = quota_limits_for_user(user=owner)
    quota_owner_lock(user=owner)
    if new_avatar and limits.avatars:
        quota_avatars_check(limits=limits, used=avatar_count_for_user(user=owner))
    if limits.storage_mb:
        used = storage_bytes_for_user(user=owner)
        quota_storage_check(limits=limits, used_bytes=used, needed_bytes=upload_bytes)


def generate_quota_check(*, owner: User, audio_seconds: float, upload_bytes: int) -> None:
    """429 when the video would pass this month's minutes; 403 when the audio would pass
    the storage quota."""
    limits = quota_limits_for_user(user=owner)
    quota_minutes_check(user=owner, limits=limits, needed_seconds=audio_seconds)
    if limits.storage_mb:
        used = storage_bytes_for_user(user=owner)
        quota_storage_check(limits=limits, used_bytes=used, needed_bytes=upload_bytes)
