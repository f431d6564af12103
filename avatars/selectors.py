"""Reads for avatars and generation jobs, always scoped to one owner."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import QuerySet, Sum
from django.http import Http404

from avatars.models import Avatar, GenerationJob
from musetalk_site.errors import ApplicationError


def avatar_list_for_user(*, user: User) -> QuerySet[Avatar]:
    return Avatar.objects.filter(owner=user).order_by("-created_at")


def avatar_get_for_user(*, user: User, avatar_id: str) -> Avatar:
    """The user's avatar ``avatar_id``; another user's avatar is simply not found."""
    avatar = Avatar.objects.filter(owner=user, avatar_id=avatar_id).first()
    if avatar is None:
        raise Http404(f"Avatar {avatar_id!r} not found.")
    return avatar


def avatar_get_usable_for_user(*, user: User, avatar_id: str) -> Avatar:
    """The user's avatar, which must have prepared assets to generate from (409 otherwise).

    During a ``force_recreate`` the previous assets keep serving, so a re-preparing avatar
    is usable too.
    """
    avatar = avatar_get_for_user(user=user, avatar_id=avatar_id)
    if not (avatar.status == Avatar.Status.READY or avatar.has_assets):
        raise ApplicationError(
            f"Avatar {avatar_id!r} is not ready (status: {avatar.status}).",
            {"avatar_id": avatar_id, "status": avatar.status},
            status=409,
        )
    return avatar


def job_list_for_user(*, user: User) -> QuerySet[GenerationJob]:
    return GenerationJob.objects.filter(owner=user).select_related("avatar").order_by("-queued_at")


def job_get_for_user(*, user: User, request_id: str) -> GenerationJob:
    job = (
        GenerationJob.objects.filter(owner=user, request_id=request_id)
        .select_related("avatar")
        .first()
    )
    if job is None:
        raise Http404(f"Request {request_id!r} not found.")
    return job


def avatar_count_for_user(*, user: User) -> int:
    """Every avatar of the user counts against the avatar quota, whatever its status."""
    return Avatar.objects.filter(owner=user).count()


def storage_bytes_for_user(*, user: User) -> int:
    """Bytes the user's avatars and videos keep in MEDIA_ROOT: prepared assets (measured when
    prepared), source videos, generated videos and their uploaded audio."""
    avatars = Avatar.objects.filter(owner=user)
    assets = avatars.aggregate(total=Sum("size_bytes"))["total"] or 0
    names = list(avatars.values_list("source_video", flat=True))
    for audio, result in GenerationJob.objects.filter(owner=user).values_list(
        "audio_file", "result"
    ):
        names += [audio, result]
    return assets + sum(_file_size(name) for name in names if name)


def _file_size(name: str) -> int:
    try:
        return (Path(settings.MEDIA_ROOT) / name).stat().st_size
    except OSError:
        return 0  # already gone: it takes no room


def avatar_usage_for_user(*, user: User) -> dict[str, int]:
    """The avatars app's share of the user's quota usage (musetalk_site.quotas)."""
    return {
        "avatars": avatar_count_for_user(user=user),
        "storage_bytes": storage_bytes_for_user(user=user),
    }
