"""Per-user quotas: the limits, the monthly minutes ledger, the checks and their errors.

Limits are the platform defaults (``QUOTA_*`` settings), overridden per user by a
:class:`~musetalk_site.models.UserQuota` row edited in the admin; 0 means unlimited.

Usage is counted where the rows live, and nothing here knows which apps exist: the services
that create work count their own rows (avatars: avatars and storage; sessions: open sessions)
and call the checks below before anything is stored; for the summary, each app answers
:data:`quota_usage_collect` with its counts. The minutes generated this calendar month (UTC)
come from the :class:`~musetalk_site.models.MonthlyUsage` ledger, which the workers add to as
videos and live chunks are made.

The status says whether waiting helps: a hard cap (avatars, storage, open sessions) is a 403,
lifted only when the user frees something or an admin raises it; the monthly minutes are a
rate, a 429 that names the day the allowance renews.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import F
from django.dispatch import Signal
from django.utils import timezone

from musetalk_site.errors import ApplicationError
from musetalk_site.models import MonthlyUsage, UserQuota

MB = 1024 * 1024

# Receivers take ``user`` and return a dict of counts among "avatars", "active_sessions" and
# "storage_bytes" (a key answered twice is summed).
quota_usage_collect = Signal()


class QuotaExceededError(ApplicationError):
    """A request over one of the user's quotas: ``extra["quota"]`` names it."""


@dataclass(frozen=True)
class QuotaLimits:
    """One user's effective limits; 0 is unlimited."""

    avatars: int
    active_sessions: int
    monthly_minutes: int
    storage_mb: int


@dataclass(frozen=True)
class QuotaUsage:
    avatars: int
    active_sessions: int
    storage_bytes: int
    generated_seconds: float  # this calendar month (UTC)


def quota_limits_for_user(*, user: User) -> QuotaLimits:
    """The platform defaults, with the user's own override where one is set."""
    override = UserQuota.objects.filter(user_id=user.pk).first()
    if override is None:
        override = UserQuota()
    return QuotaLimits(
        avatars=_chosen(override.max_avatars, settings.QUOTA_MAX_AVATARS),
        active_sessions=_chosen(override.max_active_sessions, settings.QUOTA_MAX_ACTIVE_SESSIONS),
        monthly_minutes=_chosen(override.monthly_minutes, settings.QUOTA_MONTHLY_MINUTES),
        storage_mb=_chosen(override.storage_mb, settings.QUOTA_STORAGE_MB),
    )


def _chosen(value: int | None, default: int) -> int:
    return default if value is None else value


def month_start(moment: datetime) -> datetime:
    """Midnight UTC on the first day of ``moment``'s month."""
    utc = moment.astimezone(UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_next(moment: datetime) -> datetime:
    """When the month after ``moment``'s begins: the monthly allowance renews then."""
    start = month_start(moment)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def quota_minutes_record(*, user_id: int, seconds: float, at: datetime | None = None) -> None:
    """Add ``seconds`` of generated video to the user's month (the month of ``at``, now by
    default). Workers call it once per finished video and per announced live chunk."""
    if seconds <= 0:
        return
    month = month_start(at or timezone.now()).date()
    row, _ = MonthlyUsage.objects.get_or_create(user_id=user_id, month=month)
    # F(): several workers may add to the same month at once.
    MonthlyUsage.objects.filter(pk=row.pk).update(
        generated_seconds=F("generated_seconds") + seconds
    )


def quota_generated_seconds(*, user: User, at: datetime | None = None) -> float:
    """Seconds of video the user generated in the month of ``at`` (now by default)."""
    month = month_start(at or timezone.now()).date()
    row = MonthlyUsage.objects.filter(user_id=user.pk, month=month).first()
    return row.generated_seconds if row is not None else 0.0


def quota_owner_lock(*, user: User) -> None:
    """Inside a transaction: make one user's requests for a capped slot wait for each other,
    so two cannot both take the last one (a row lock on PostgreSQL; SQLite has none)."""
    User.objects.select_for_update().filter(pk=user.pk).first()


def quota_avatars_check(*, limits: QuotaLimits, used: int) -> None:
    """403 when the user already has ``limits.avatars`` avatars."""
    if limits.avatars and used >= limits.avatars:
        raise QuotaExceededError(
            f"You have {used} of your {limits.avatars} avatars; delete one to create another.",
            {"quota": "avatars", "limit": limits.avatars, "used": used},
            status=403,
        )


def quota_sessions_check(*, limits: QuotaLimits, used: int) -> None:
    """403 when the user already has ``limits.active_sessions`` sessions open."""
    if limits.active_sessions and used >= limits.active_sessions:
        raise QuotaExceededError(
            f"You have {used} of your {limits.active_sessions} sessions open; "
            "end one to open another.",
            {"quota": "active_sessions", "limit": limits.active_sessions, "used": used},
            status=403,
        )


def quota_storage_check(*, limits: QuotaLimits, used_bytes: int, needed_bytes: int) -> None:
    """403 when ``needed_bytes`` more would not fit in the user's storage."""
    limit_bytes = limits.storage_mb * MB
    if not limits.storage_mb or used_bytes + needed_bytes <= limit_bytes:
        return
    raise QuotaExceededError(
        f"This upload ({_mb(needed_bytes)} MB) does not fit: you use {_mb(used_bytes)} of your "
        f"{limits.storage_mb} MB of storage; delete avatars or videos to make room.",
        {
            "quota": "storage",
            "limit_bytes": limit_bytes,
            "used_bytes": used_bytes,
            "needed_bytes": needed_bytes,
        },
        status=403,
    )


def quota_minutes_check(
    *, user: User, limits: QuotaLimits, needed_seconds: float, now: datetime | None = None
) -> None:
    """429 when ``needed_seconds`` more video would go past this month's allowance."""
    if not limits.monthly_minutes:
        return
    now = now or timezone.now()
    used = quota_generated_seconds(user=user, at=now)
    allowance = limits.monthly_minutes * 60
    if used + needed_seconds <= allowance:
        return
    renews = month_next(now)
    yours = f"your {limits.monthly_minutes} minute{'' if limits.monthly_minutes == 1 else 's'}"
    if used >= allowance:
        message = f"You have used {_minutes(used)} of {yours}"
    else:
        message = (
            f"This audio needs {_duration(needed_seconds)} but only "
            f"{_duration(allowance - used)} of {yours} is left"
        )
    raise QuotaExceededError(
        f"{message} this month; the allowance renews on {renews:%Y-%m-%d}.",
        {
            "quota": "monthly_minutes",
            "limit_minutes": limits.monthly_minutes,
            "used_minutes": round(used / 60, 2),
            "needed_minutes": round(needed_seconds / 60, 2),
            "renews_at": renews.isoformat(),
        },
        status=429,
    )


def _mb(size: int) -> str:
    return f"{size / MB:.1f}"


def _minutes(seconds: float) -> str:
    return f"{round(seconds / 60, 1):g}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{round(seconds / 60, 1):g} min"


def quota_usage_for_user(*, user: User) -> QuotaUsage:
    """What the user uses now, as each app counts its own rows, and this month's minutes."""
    counts: dict[str, int] = {}
    for _receiver, answer in quota_usage_collect.send(sender=None, user=user):
        assert isinstance(answer, dict), "a usage receiver returns a dict of counts"
        for key, value in answer.items():
            counts[key] = counts.get(key, 0) + value
    return QuotaUsage(
        avatars=counts.get("avatars", 0),
        active_sessions=counts.get("active_sessions", 0),
        storage_bytes=counts.get("storage_bytes", 0),
        generated_seconds=quota_generated_seconds(user=user),
    )


def quota_summary_for_user(*, user: User) -> dict[str, Any]:
    """Usage and limits side by side (``None``: unlimited), for the API and the admin."""
    limits = quota_limits_for_user(user=user)
    usage = quota_usage_for_user(user=user)
    return {
        "usage": {
            "avatars": usage.avatars,
            "active_sessions": usage.active_sessions,
            "monthly_minutes": round(usage.generated_seconds / 60, 1),
            "storage_mb": round(usage.storage_bytes / MB, 1),
            "month_renews_at": month_next(timezone.now()),
        },
        "limits": {
            "avatars": limits.avatars or None,
            "active_sessions": limits.active_sessions or None,
            "monthly_minutes": limits.monthly_minutes or None,
            "storage_mb": limits.storage_mb or None,
        },
    }


def quota_monthly_history(*, user: User, months: int = 12) -> list[dict[str, Any]]:
    """The user's generated minutes per calendar month (UTC), newest first."""
    rows = MonthlyUsage.objects.filter(user_id=user.pk).order_by("-month")[:months]
    return [{"month": row.month, "minutes": round(row.generated_seconds / 60, 1)} for row in rows]
