"""The user page of the admin edits a user's quota overrides and shows their usage."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from musetalk_site.models import UserQuota
from tests.factories import AvatarFactory, StreamSessionFactory, UserFactory

pytestmark = pytest.mark.django_db


def _change_form(user, **quota: str) -> dict[str, str]:
    """The user change form as the admin page posts it, with the quota inline."""
    existing = UserQuota.objects.filter(user=user).first()
    return {
        "username": user.username,
        "email": user.email,
        "first_name": "",
        "last_name": "",
        "is_active": "on",
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "quota-TOTAL_FORMS": "1",
        "quota-INITIAL_FORMS": "1" if existing else "0",
        "quota-MIN_NUM_FORMS": "0",
        "quota-MAX_NUM_FORMS": "1",
        "quota-0-id": str(existing.pk) if existing else "",
        "quota-0-user": str(user.pk),
        **{f"quota-0-{name}": value for name, value in quota.items()},
    }


def _api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_the_user_page_shows_usage_against_the_limits(admin_client, settings):
    settings.QUOTA_MAX_AVATARS, settings.QUOTA_MAX_ACTIVE_SESSIONS = 5, 0
    user = UserFactory()
    avatar = AvatarFactory(owner=user)
    AvatarFactory(owner=user)
    StreamSessionFactory(owner=user, avatar=avatar)
    page = admin_client.get(reverse("admin:auth_user_change", args=[user.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "quota overrides" in html.lower()
    assert "avatars: 2 of 5" in html
    assert "open sessions: 1 of unlimited" in html
    assert admin_client.get(reverse("admin:auth_user_add")).status_code == 200


def test_an_override_set_on_the_user_page_takes_effect_and_clearing_it_restores_the_default(
    admin_client, settings
):
    settings.QUOTA_MAX_ACTIVE_SESSIONS = 20
    user = UserFactory()
    avatar = AvatarFactory(owner=user, avatar_id="anna")
    StreamSessionFactory(owner=user, avatar=avatar)
    url = reverse("admin:auth_user_change", args=[user.pk])
    api = _api(user)

    response = admin_client.post(url, _change_form(user, max_active_sessions="1"))
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert UserQuota.objects.get(user=user).max_active_sessions == 1
    refused = api.post("/sessions/create?avatar_id=anna")
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        "You have 1 of your 1 sessions open; end one to open another."
    )

    response = admin_client.post(url, _change_form(user, max_active_sessions=""))
    assert response.status_code == 302
    assert UserQuota.objects.get(user=user).max_active_sessions is None
    assert api.post("/sessions/create?avatar_id=anna").status_code == 200
