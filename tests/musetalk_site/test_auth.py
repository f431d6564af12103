from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_it_returns_a_token_for_valid_credentials():
    user = UserFactory(username="alice")
    response = APIClient().post(
        "/api/auth/token/", {"username": "alice", "password": "correct horse battery"}
    )
    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=user).key}


def test_it_refuses_wrong_credentials_with_the_error_shape():
    UserFactory(username="alice")
    response = APIClient().post("/api/auth/token/", {"username": "alice", "password": "nope"})
    assert response.status_code == 400
    assert response.json() == {"message": "Invalid username or password.", "extra": {}}
    assert not Token.objects.exists()


def test_it_names_the_missing_field():
    response = APIClient().post("/api/auth/token/", {"username": "alice"})
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "password: This field is required."
    assert "password" in body["extra"]["fields"]


def test_token_header_authenticates_api_calls():
    user = UserFactory(username="bob")
    token = Token.objects.create(user=user)
    client = APIClient()
    assert client.get("/api/me/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.get("/api/me/")
    assert response.status_code == 200
    assert response.json()["username"] == "bob"


def test_a_bad_token_is_refused_with_the_error_shape():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get("/api/me/")
    assert response.status_code == 401
    assert response.json() == {"message": "Invalid token.", "extra": {}}


def test_create_api_token_prints_a_stable_token_and_rotates(capsys):
    user = UserFactory(username="carol")
    call_command("create_api_token", "carol")
    first = capsys.readouterr().out.strip()
    assert first == Token.objects.get(user=user).key
    call_command("create_api_token", "carol")
    assert capsys.readouterr().out.strip() == first
    call_command("create_api_token", "carol", "--rotate")
    rotated = capsys.readouterr().out.strip()
    assert rotated != first and rotated == Token.objects.get(user=user).key


def test_create_api_token_refuses_unknown_users():
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("create_api_token", "ghost")


def test_ensure_demo_user_prints_credentials_only_once(capsys, client):
    call_command("ensure_demo_user")
    out = capsys.readouterr().out
    password = out.split("password:")[1].split()[0]
    assert client.login(username="demo", password=password)
    call_command("ensure_demo_user")
    again = capsys.readouterr().out
    assert "already exists" in again and password not in again


def test_pages_need_a_login_and_login_works(client):
    UserFactory(username="dave")
    response = client.get("/", headers={"accept": "text/html"})  # a browser
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    response = client.post("/login/", {"username": "dave", "password": "correct horse battery"})
    assert response.status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    assert b"Your avatars" in page.content


@pytest.mark.parametrize("method", ["post", "delete"])
def test_a_cookie_user_of_the_async_endpoints_passes_the_csrf_check(method):
    """The WebRTC endpoints are plain async views: a signed-in browser's unsafe request needs
    the CSRF token there as it does in DRF, else a page on another site could drive them."""
    from django.test import Client

    UserFactory(username="carol")
    browser = Client(enforce_csrf_checks=True)
    browser.login(username="carol", password="correct horse battery")
    path = "/webrtc/sessions/nosuchsession/" + ("interrupt" if method == "post" else "")
    path = path.rstrip("/")
    refused = getattr(browser, method)(path)
    assert refused.status_code == 403
    assert refused.json()["message"].startswith("CSRF Failed: CSRF cookie not set")

    # A call that carries a token (a player page's) is that token's, not the cookie's: no CSRF
    # check, and this one, no API key, does not open an owner's endpoint.
    assert getattr(browser, method)(path + "?token=not-a-key").status_code == 401

    browser.get("/dashboard/videos/")  # any page with a form sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    checked = getattr(browser, method)(path, HTTP_X_CSRFTOKEN=token)
    assert checked.status_code == 404  # past the check: the session does not exist

    api = Client(enforce_csrf_checks=True)  # a token header needs no CSRF token
    key = Token.objects.create(user=UserFactory(username="dave")).key
    assert getattr(api, method)(path, HTTP_AUTHORIZATION=f"Token {key}").status_code == 404
