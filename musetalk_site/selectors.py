"""Platform-level reads."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from avatars.models import Avatar, GenerationJob
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
