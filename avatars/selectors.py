"""Reads for avatars and generation jobs, always scoped to one owner."""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Q, QuerySet, Sum
from django.http import Http404

from avatars.models import Avatar, GenerationJob
from musetalk_site.errors import ApplicationError


def avatar_list_for_user(*, user: User) -> QuerySet[Avatar]:
    return Avatar.objects.filter(owner=user).order_by("-created_at")


def avatar_list_prepared_for_user(*, user: User) -> QuerySet[Avatar]:
    """The user's avatars that have prepared assets (ready, or re-preparing on old ones)."""
    prepared = Q(status=Avatar.Status.READY) | Q(has_assets=True)
    return Avatar.objects.filter(prepared, owner=user).order_by("avatar_id")


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


PREPARE_POLL_SECONDS = 0.25


def avatar_wait_prepared(*, avatar: Avatar, timeout_seconds: float) -> Avatar:
    """``avatar`` once its preparation has finished (ready or failed), or as it is when
    ``timeout_seconds`` pass first; 404 when it is deleted meanwhile."""
    deadline = time.monotonic() + timeout_seconds
    busy = (Avatar.Status.QUEUED, Avatar.Status.PREPARING)
    while avatar.status in busy and time.monotonic() < deadline:
        time.sleep(PREPARE_POLL_SECONDS)
        fresh = Avatar.objects.filter(pk=avatar.pk).first()
        if fresh is None:
            raise Http404(f"Avatar {avatar.avatar_id!r} not found.")
        avatar = fresh
    return avatar


AVATAR_VIDEO_ROLES = ("idle", "talking", "input")


def avatar_video_file(*, avatar: Avatar, role: str = "idle") -> tuple[Path, str]:
    """The avatar's idle loop (``role="idle"``, what players show first) or its source video
    (``"talking"``/``"input"``), each falling back on the other; with its content type."""
    if role not in AVATAR_VIDEO_ROLES:
        raise ApplicationError(
            f"role must be one of {', '.join(AVATAR_VIDEO_ROLES)}; got {role[:20]!r}.",
            {"field": "role"},
        )
    media = Path(settings.MEDIA_ROOT)
    idle = media / avatar.storage_key / "idle.mp4"
    source = media / avatar.source_video.name if avatar.source_video.name else None
    candidates = [idle, source] if role == "idle" else [source, idle]
    for path in candidates:
        if path is not None and path.is_file():
            content_type = mimetypes.guess_type(path.name)[0] or "video/mp4"
            return path, content_type
    raise Http404(f"Avatar {avatar.avatar_id!r} has no {role} video (yet).")


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
    names = [name for pair in avatars.values_list("source_video", "idle_video") for name in pair]
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
