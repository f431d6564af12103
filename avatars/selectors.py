"""Reads for avatars and generation jobs, always scoped to one owner."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import QuerySet
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
