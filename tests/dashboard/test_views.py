"""The account pages: sign up (and closed), password change, API tokens (shown once,
revoked after a confirmation), each user seeing only their own."""

from __future__ import annotations

import re
from datetime import date

import pytest
from django.contrib.auth.models import User
from django.test import Client

from avatars.models import Avatar
from musetalk_site.api_tokens import api_token_create, api_token_user
from musetalk_site.models import ApiToken, MonthlyUsage
from tests.factories import (
    AvatarFactory,
    StreamRequestFactory,
    StreamSessionFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a much longer passphrase 42"


def _signed_in(client: Client, **fields) -> User:
    user = UserFactory(**fields)
    client.force_login(user)
    return user


def test_signing_up_makes_an_account_and_signs_it_in(client):
    response = client.post(
        "/signup/",
        {"username": "newcomer", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 302 and response["Location"] == "/"
    user = User.objects.get(username="newcomer")
    assert user.check_password(NEW_PASSWORD) and not user.is_staff
    page = client.get("/", headers={"accept": "text/html"})
    assert page.status_code == 200 and b"Welcome, newcomer" in page.content


def test_sign_up_mistakes_are_shown_by_their_fields(client):
    UserFactory(username="taken")
    response = client.post(
        "/signup/", {"username": "taken", "password1": "short", "password2": "other"}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "already exists" in page and "didn’t match" in page
    assert User.objects.filter(username="taken").count() == 1


def test_sign_up_can_be_switched_off(client, settings):
    settings.SIGNUP_ENABLED = False
    assert client.get("/signup/").status_code == 404
    response = client.post(
        "/signup/",
        {"username": "intruder", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 404 and b"Sign-up is closed" in response.content
    assert not User.objects.filter(username="intruder").exists()
    assert b'href="/signup/"' not in client.get("/login/").content


def test_the_login_page_links_to_sign_up_while_it_is_open(client):
    assert b'href="/signup/"' in client.get("/login/").content


def test_a_password_change_needs_the_old_one(client):
    user = _signed_in(client)
    wrong = client.post(
        "/account/password/",
        {"old_password": "nope", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert wrong.status_code == 200 and b"incorrect" in wrong.content
    done = client.post(
        "/account/password/",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert done.status_code == 302 and done["Location"] == "/account/password/done/"
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert client.get("/account/password/done/").status_code == 200  # still signed in


def test_account_pages_need_a_sign_in(client):
    for path in (
        "/account/tokens/",
        "/account/password/",
        "/account/tokens/1/revoke/",
        "/dashboard/live/",
    ):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), path


def test_a_new_token_is_shown_once_then_only_by_its_prefix(client):
    user = _signed_in(client)
    response = client.post("/account/tokens/", {"name": "iOS app"})
    assert response.status_code == 201
    [key] = re.findall(r'value="(mtk_[^"]+)"', response.content.decode())
    later = client.get("/account/tokens/").content.decode()
    assert key not in later and "iOS app" in later
    assert ApiToken.objects.get().prefix + "…" in later
    assert "never" in later  # not used yet
    assert api_token_user(key=key) == user
    assert "never" not in client.get("/account/tokens/").content.decode()


def test_token_mistakes_are_shown_on_the_form(client):
    user = _signed_in(client)
    api_token_create(user=user, name="ci")
    assert client.post("/account/tokens/", {"name": ""}).status_code == 400
    taken = client.post("/account/tokens/", {"name": "ci"})
    assert taken.status_code == 400 and b"already have a token named" in taken.content
    assert ApiToken.objects.count() == 1


def test_revoking_asks_first_then_the_key_stops_working(client):
    user = _signed_in(client)
    made = api_token_create(user=user, name="old laptop")
    url = f"/account/tokens/{made.token.pk}/revoke/"
    confirm = client.get(url)
    assert confirm.status_code == 200 and "Revoke “old laptop”?" in confirm.content.decode()
    assert api_token_user(key=made.key) == user  # asking revoked nothing
    response = client.post(url)
    assert response.status_code == 302 and response["Location"] == "/account/tokens/"
    assert api_token_user(key=made.key) is None
    assert b"revoked" in client.get("/account/tokens/").content


def test_nobody_sees_or_revokes_another_users_tokens(client):
    owner = UserFactory()
    made = api_token_create(user=owner, name="owner's secret app")
    _signed_in(client)
    assert b"owner's secret app" not in client.get("/account/tokens/").content
    url = f"/account/tokens/{made.token.pk}/revoke/"
    assert client.get(url).status_code == 404
    assert client.post(url).status_code == 404
    assert api_token_user(key=made.key) == owner


def test_deleting_an_avatar_asks_first_and_only_its_owner_can(client):
    owner = UserFactory()
    AvatarFactory(owner=owner, avatar_id="anna", status=Avatar.Status.READY)
    _signed_in(client)  # someone else
    assert client.get("/dashboard/avatars/anna/delete/").status_code == 404
    assert client.post("/dashboard/avatars/anna/delete/").status_code == 404
    client.force_login(owner)
    confirm = client.get("/dashboard/avatars/anna/delete/")
    assert confirm.status_code == 200 and "Delete “anna”?" in confirm.content.decode()
    assert Avatar.objects.filter(avatar_id="anna").exists()
    response = client.post("/dashboard/avatars/anna/delete/")
    assert response.status_code == 302 and response["Location"] == "/"
    assert not Avatar.objects.filter(avatar_id="anna").exists()


def test_usage_shows_minutes_by_month_and_by_session_against_the_limits(client, settings):
    settings.QUOTA_MONTHLY_MINUTES = 600
    user = _signed_in(client)
    MonthlyUsage.objects.create(user=user, month=date(2026, 10, 1), generated_seconds=90.0)
    session = StreamSessionFactory(owner=user, session_id="mine-123")
    for seconds in (12.5, 2.0):
        StreamRequestFactory(session=session, status="completed", generated_seconds=seconds)
    StreamSessionFactory(session_id="theirs-456")  # someone else's
    page = client.get("/dashboard/usage/").content.decode()
    assert "October 2026" in page and "1.5" in page  # 90 s = 1.5 min
    assert "of 600 min" in page
    row = re.search(r"<tr><td><code>mine-123</code>.*?</tr>", page, re.S)
    assert row and "<td>2</td><td>14.5</td>" in row.group(0)
    assert "theirs-456" not in page


def test_sign_ups_and_sign_ins_past_the_rate_get_a_429_page(client, settings):
    settings.THROTTLE_TOKEN_RATE = "2/min"
    UserFactory(username="someone")
    wrong = {"username": "someone", "password": "guess"}
    assert client.post("/login/", wrong).status_code == 200  # the form again, with its error
    assert client.post("/signup/", {"username": "x"}).status_code == 400
    refused = client.post("/login/", {"username": "someone", "password": PASSWORD})
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert b"Too many attempts" in refused.content
    assert client.post("/signup/", {"username": "y"}).status_code == 429
    assert client.get("/login/").status_code == 200  # reading the form is not an attempt


def test_the_live_playground_offers_only_the_users_prepared_avatars(client):
    user = _signed_in(client)
    AvatarFactory(owner=user, avatar_id="anna", status=Avatar.Status.READY)
    AvatarFactory(owner=user, avatar_id="still-preparing", status=Avatar.Status.PREPARING)
    AvatarFactory(owner=UserFactory(), avatar_id="someone-elses", status=Avatar.Status.READY)
    page = client.get("/dashboard/live/").content.decode()
    avatars = re.search(r'<select id="live-avatar".*?</select>', page, re.S).group(0)
    assert re.findall(r'<option value="([^"]+)">', avatars) == ["anna"]
    assert 'id="live-start"' in page and "dashboard/live.js" in page


def test_the_live_playground_without_a_prepared_avatar_says_what_to_do(client):
    _signed_in(client)
    page = client.get("/dashboard/live/").content.decode()
    assert 'id="live-start"' not in page and "No prepared avatar yet" in page


def test_the_sign_in_token_is_listed_and_can_be_revoked(client):
    from rest_framework.authtoken.models import Token

    user = _signed_in(client)
    assert "None: nothing has signed in" in client.get("/account/tokens/").content.decode()
    token = Token.objects.create(user=user)
    other = Token.objects.create(user=UserFactory())
    page = client.get("/account/tokens/").content.decode()
    assert f"<code>{token.key[:6]}…</code>" in page and token.key not in page
    confirm = client.get("/account/tokens/sign-in/revoke/")
    assert confirm.status_code == 200 and "Revoke the sign-in token?" in confirm.content.decode()
    assert Token.objects.filter(user=user).exists()
    response = client.post("/account/tokens/sign-in/revoke/")
    assert response.status_code == 302 and response["Location"] == "/account/tokens/"
    assert not Token.objects.filter(user=user).exists()
    assert Token.objects.filter(pk=other.pk).exists()  # nobody else's
    again = client.post("/account/tokens/sign-in/revoke/")
    assert again.status_code == 302  # nothing left to revoke: back to the list, with a note
