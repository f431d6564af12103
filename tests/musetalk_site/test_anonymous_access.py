"""Opt-in anonymous access: requests without credentials act as ANONYMOUS_ACCESS_USER."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from musetalk_site.auth import TokenAuthMiddleware
from musetalk_site.env import env_username
from tests.factories import AvatarFactory, UserFactory

pytestmark = pytest.mark.django_db

APP = "https://app.example.com"


@pytest.fixture
def kiosk(settings):
    """Anonymous access on, for the user ``kiosk`` who owns one avatar."""
    user = UserFactory(username="kiosk")
    AvatarFactory(owner=user, avatar_id="kiosk_host")
    settings.ANONYMOUS_ACCESS_USER = "kiosk"
    return user


def _avatar_ids(response) -> set[str]:
    body = response.json()
    items = body["results"] if isinstance(body, dict) else body
    return {item["avatar_id"] for item in items}


def test_off_by_default_a_request_without_credentials_gets_401(settings):
    assert settings.ANONYMOUS_ACCESS_USER == ""
    AvatarFactory(owner=UserFactory(username="kiosk"), avatar_id="kiosk_host")
    assert APIClient().get("/avatars/").status_code == 401
    assert APIClient().get("/api/me/").status_code == 401


def test_on_a_request_without_credentials_sees_the_named_users_data_only(kiosk):
    AvatarFactory(owner=UserFactory(username="other"), avatar_id="other_host")
    response = APIClient().get("/avatars/")
    assert response.status_code == 200
    assert _avatar_ids(response) == {"kiosk_host"}
    assert APIClient().get("/api/me/").json()["username"] == "kiosk"
    assert APIClient().get("/avatars/other_host").status_code == 404


def test_on_requests_with_credentials_are_authenticated_as_always(kiosk):
    other = UserFactory(username="other")
    AvatarFactory(owner=other, avatar_id="other_host")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=other).key}")
    assert _avatar_ids(client.get("/avatars/")) == {"other_host"}
    for header in ("Token not-a-token", "Bearer something", "Token"):
        refused = APIClient()
        refused.credentials(HTTP_AUTHORIZATION=header)
        assert refused.get("/avatars/").status_code == 401, header
    assert APIClient().get("/avatars/?token=not-a-token").status_code == 401


def test_a_page_on_a_foreign_origin_never_gets_it(kiosk, settings):
    settings.CORS_ALLOWED_ORIGINS = [APP]
    foreign = APIClient().get("/avatars/", headers={"origin": "https://evil.example.net"})
    assert foreign.status_code == 401
    assert APIClient().get("/avatars/", headers={"origin": APP}).status_code == 200
    assert APIClient().get("/avatars/", headers={"origin": "http://testserver"}).status_code == 200


def test_a_named_user_that_does_not_exist_or_is_inactive_lets_nobody_in(settings, caplog):
    settings.ANONYMOUS_ACCESS_USER = "ghost"
    with caplog.at_level(logging.ERROR, logger="musetalk_site.anonymous"):
        assert APIClient().get("/avatars/").status_code == 401
    assert "ANONYMOUS_ACCESS_USER='ghost' names no active user" in caplog.text
    UserFactory(username="ghost", is_active=False)
    assert APIClient().get("/avatars/").status_code == 401


@pytest.mark.django_db(transaction=True)  # the SSE feeds are async views
def test_the_async_feeds_take_it_too(settings):
    user = UserFactory(username="kiosk")
    AvatarFactory(owner=UserFactory(username="other"), avatar_id="other_host")
    client = Client()
    assert client.get("/avatars/missing/events").status_code == 401
    settings.ANONYMOUS_ACCESS_USER = user.username
    assert client.get("/avatars/missing/events").status_code == 404  # signed in: not found
    assert client.get("/avatars/other_host/events").status_code == 404  # never another's
    assert client.get("/avatars/missing/events?token=bad").status_code == 401
    assert (
        client.get("/avatars/missing/events", headers={"authorization": "Token bad"}).status_code
        == 401
    )


@pytest.mark.django_db(transaction=True)
def test_a_websocket_handshake_without_credentials_gets_the_named_user(settings):
    user = UserFactory(username="kiosk")
    settings.ANONYMOUS_ACCESS_USER = "kiosk"
    seen: list = []

    async def inner(scope, receive, send):
        seen.append(scope["user"])

    middleware = TokenAuthMiddleware(inner)
    for query, expected in ((b"", user), (b"token=bad", AnonymousUser()), (b"token=", None)):
        scope = {"type": "websocket", "query_string": query, "headers": [], "user": AnonymousUser()}
        async_to_sync(middleware)(scope, None, None)
        if expected is None:
            assert not seen[-1].is_authenticated
        else:
            assert seen[-1] == expected, query


def test_health_and_every_page_show_it(kiosk, client):
    health = APIClient().get("/health").json()
    assert health["anonymous_access"]["enabled"] is True
    assert health["anonymous_access"]["user"] == "kiosk"
    assert "ANONYMOUS ACCESS IS ON" in health["anonymous_access"]["warning"]
    login = client.get("/login/").content.decode()
    assert 'id="anonymous-access-banner"' in login and "&#x27;kiosk&#x27;" in login
    client.force_login(UserFactory())
    assert 'id="anonymous-access-banner"' in client.get("/").content.decode()


def test_health_and_pages_say_nothing_when_it_is_off(client):
    assert APIClient().get("/health").json()["anonymous_access"] == {"enabled": False}
    assert "anonymous-access-banner" not in client.get("/login/").content.decode()


def test_the_check_command_refuses_a_missing_user_and_names_it(settings, capsys):
    call_command("check_anonymous_access")  # off: nothing to check
    settings.ANONYMOUS_ACCESS_USER = "ghost"
    with pytest.raises(CommandError, match="ANONYMOUS_ACCESS_USER='ghost' names no active user"):
        call_command("check_anonymous_access")
    UserFactory(username="ghost")
    call_command("check_anonymous_access")
    assert "ANONYMOUS ACCESS IS ON" in capsys.readouterr().out


def test_the_setting_must_be_a_username():
    assert env_username("ANONYMOUS_ACCESS_USER", environ={}) == ""
    assert (
        env_username("ANONYMOUS_ACCESS_USER", environ={"ANONYMOUS_ACCESS_USER": " bob "}) == "bob"
    )
    with pytest.raises(ImproperlyConfigured, match="ANONYMOUS_ACCESS_USER must be a username"):
        env_username("ANONYMOUS_ACCESS_USER", environ={"ANONYMOUS_ACCESS_USER": "bob smith"})
