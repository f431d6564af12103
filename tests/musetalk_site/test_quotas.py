"""Quotas in the ground: limits (defaults and overrides), the monthly ledger, the checks'
statuses and messages, and the usage summary that each app's rows add up to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.utils import timezone as django_timezone
from rest_framework.test import APIClient

from musetalk_site.models import MonthlyUsage, UserQuota
from musetalk_site.quotas import (
    MB,
    QuotaExceededError,
    QuotaLimits,
    month_next,
    month_start,
    quota_avatars_check,
    quota_generated_seconds,
    quota_limits_for_user,
    quota_minutes_check,
    quota_minutes_record,
    quota_sessions_check,
    quota_storage_check,
    quota_summary_for_user,
)
from sessions_app.models import StreamSession
from tests.factories import AvatarFactory, GenerationJobFactory, StreamSessionFactory, UserFactory

pytestmark = pytest.mark.django_db

NOV_15 = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
LIMITS = QuotaLimits(avatars=2, active_sessions=3, monthly_minutes=60, storage_mb=1)


@pytest.fixture
def defaults(settings):
    settings.QUOTA_MAX_AVATARS = 50
    settings.QUOTA_MAX_ACTIVE_SESSIONS = 20
    settings.QUOTA_MONTHLY_MINUTES = 600
    settings.QUOTA_STORAGE_MB = 20480
    return settings


def test_limits_are_the_defaults_until_an_override_sets_them(defaults):
    user = UserFactory()
    assert quota_limits_for_user(user=user) == QuotaLimits(50, 20, 600, 20480)
    UserQuota.objects.create(user=user, max_avatars=3, monthly_minutes=0)
    # An empty field keeps the default; 0 is unlimited, not "none allowed".
    assert quota_limits_for_user(user=user) == QuotaLimits(3, 20, 0, 20480)


def test_the_month_renews_at_midnight_utc_on_the_first():
    assert month_start(NOV_15) == datetime(2026, 11, 1, tzinfo=UTC)
    assert month_next(NOV_15) == datetime(2026, 12, 1, tzinfo=UTC)
    new_year = datetime(2027, 1, 1, tzinfo=UTC)
    assert month_next(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == new_year
    # 1 December 01:00 in UTC+2 is still November in UTC.
    east = datetime(2026, 12, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert month_start(east) == datetime(2026, 11, 1, tzinfo=UTC)


def test_minutes_add_up_in_the_month_they_were_made_in():
    user = UserFactory()
    quota_minutes_record(user_id=user.pk, seconds=30.0, at=NOV_15)
    quota_minutes_record(user_id=user.pk, seconds=12.5, at=NOV_15)
    quota_minutes_record(user_id=user.pk, seconds=10.0, at=datetime(2026, 12, 2, tzinfo=UTC))
    quota_minutes_record(user_id=user.pk, seconds=0.0, at=NOV_15)
    assert quota_generated_seconds(user=user, at=NOV_15) == 42.5
    assert quota_generated_seconds(user=user, at=datetime(2026, 12, 31, tzinfo=UTC)) == 10.0
    assert MonthlyUsage.objects.filter(user=user).count() == 2


def test_spent_minutes_are_a_429_that_names_the_renewal_day():
    user = UserFactory()
    quota_minutes_record(user_id=user.pk, seconds=3600.0, at=NOV_15)
    with pytest.raises(QuotaExceededError) as refused:
        quota_minutes_check(user=user, limits=LIMITS, needed_seconds=1.0, now=NOV_15)
    assert refused.value.status_code == 429
    assert refused.value.message == (
        "You have used 60 of your 60 minutes this month; the allowance renews on 2026-12-01."
    )
    assert refused.value.extra == {
        "quota": "monthly_minutes",
        "limit_minutes": 60,
        "used_minutes": 60.0,
        "needed_minutes": 0.02,
        "renews_at": "2026-12-01T00:00:00+00:00",
    }


def test_audio_longer_than_the_minutes_left_is_refused_and_shorter_is_not():
    user = UserFactory()
    quota_minutes_record(user_id=user.pk, seconds=59 * 60, at=NOV_15)
    quota_minutes_check(user=user, limits=LIMITS, needed_seconds=60.0, now=NOV_15)
    with pytest.raises(QuotaExceededError) as refused:
        quota_minutes_check(user=user, limits=LIMITS, needed_seconds=90.0, now=NOV_15)
    assert refused.value.message == (
        "This audio needs 1.5 min but only 1 min of your 60 minutes is left this month; "
        "the allowance renews on 2026-12-01."
    )
    # Last month's minutes do not count in December.
    quota_minutes_check(
        user=user, limits=LIMITS, needed_seconds=90.0, now=datetime(2026, 12, 1, tzinfo=UTC)
    )


def test_hard_caps_are_403s_that_say_what_to_free():
    with pytest.raises(QuotaExceededError) as avatars:
        quota_avatars_check(limits=LIMITS, used=2)
    assert (avatars.value.status_code, avatars.value.message) == (
        403,
        "You have 2 of your 2 avatars; delete one to create another.",
    )
    with pytest.raises(QuotaExceededError) as sessions:
        quota_sessions_check(limits=LIMITS, used=3)
    assert (sessions.value.status_code, sessions.value.message) == (
        403,
        "You have 3 of your 3 sessions open; end one to open another.",
    )
    with pytest.raises(QuotaExceededError) as storage:
        quota_storage_check(limits=LIMITS, used_bytes=MB // 2, needed_bytes=MB // 2 + 1)
    assert storage.value.status_code == 403
    assert storage.value.message == (
        "This upload (0.5 MB) does not fit: you use 0.5 of your 1 MB of storage; "
        "delete avatars or videos to make room."
    )
    assert storage.value.extra["quota"] == "storage"
    quota_avatars_check(limits=LIMITS, used=1)
    quota_sessions_check(limits=LIMITS, used=2)
    quota_storage_check(limits=LIMITS, used_bytes=MB // 2, needed_bytes=MB // 2)


def test_unlimited_quotas_never_refuse():
    user = UserFactory()
    quota_minutes_record(user_id=user.pk, seconds=10**7)
    unlimited = QuotaLimits(0, 0, 0, 0)
    quota_avatars_check(limits=unlimited, used=10**6)
    quota_sessions_check(limits=unlimited, used=10**6)
    quota_storage_check(limits=unlimited, used_bytes=10**15, needed_bytes=10**12)
    quota_minutes_check(user=user, limits=unlimited, needed_seconds=10**6)


def test_the_summary_adds_up_each_apps_rows(defaults, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    (tmp_path / "v.mp4").write_bytes(b"v" * MB)
    (tmp_path / "a.wav").write_bytes(b"a" * (MB // 2))
    user = UserFactory()
    UserQuota.objects.create(user=user, max_active_sessions=0, storage_mb=100)
    anna = AvatarFactory(owner=user, size_bytes=2 * MB, source_video="v.mp4")
    AvatarFactory(owner=user, size_bytes=None, source_video="gone.mp4")
    GenerationJobFactory(owner=user, avatar=anna, audio_file="a.wav", result="")
    StreamSessionFactory(owner=user, avatar=anna)
    StreamSessionFactory(owner=user, avatar=anna, status=StreamSession.Status.ENDED)
    overdue = django_timezone.now() - timedelta(seconds=1)
    StreamSessionFactory(owner=user, avatar=anna, expires_at=overdue)  # not open any more
    AvatarFactory(size_bytes=50 * MB)  # another user's
    quota_minutes_record(user_id=user.pk, seconds=90.0)
    summary = quota_summary_for_user(user=user)
    usage = summary.pop("usage")
    assert usage.pop("month_renews_at") == month_next(django_timezone.now())
    assert usage == {"avatars": 2, "active_sessions": 1, "monthly_minutes": 1.5, "storage_mb": 3.5}
    assert summary["limits"] == {
        "avatars": 50,
        "active_sessions": None,
        "monthly_minutes": 600,
        "storage_mb": 100,
    }


def test_the_me_api_shows_the_users_usage_and_limits(settings):
    settings.QUOTA_MAX_AVATARS = 7
    user = UserFactory(username="quota-me")
    AvatarFactory(owner=user)
    client = APIClient()
    client.force_authenticate(user)
    body = client.get("/api/me/").json()
    assert body["usage"]["avatars"] == 1 and body["limits"]["avatars"] == 7
    assert set(body["limits"]) == {"avatars", "active_sessions", "monthly_minutes", "storage_mb"}
    assert body["usage"]["month_renews_at"].endswith(("Z", "+00:00"))
