"""Named API tokens open the REST API, the async views and the WebSockets; the sign-in
token keeps working beside them."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from musetalk_site.api_tokens import api_token_create, api_token_revoke
from musetalk_site.auth import user_for_token
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _me(key: str) -> int:
    return APIClient().get("/api/me/", HTTP_AUTHORIZATION=f"Token {key}").status_code


def test_a_named_token_opens_the_rest_api_until_revoked():
    user = UserFactory(username="keyholder")
    made = api_token_create(user=user, name="app")
    response = APIClient().get("/api/me/", HTTP_AUTHORIZATION=f"Token {made.key}")
    assert response.status_code == 200 and response.json()["username"] == "keyholder"
    api_token_revoke(user=user, token_id=made.token.pk)
    assert _me(made.key) == 401


def test_the_sign_in_token_still_works():
    user = UserFactory()
    assert _me(Token.objects.create(user=user).key) == 200
    assert _me("mtk_made-up") == 401 and _me("made-up") == 401


def test_the_query_and_websocket_paths_take_named_tokens():
    user = UserFactory()
    made = api_token_create(user=user, name="player")
    assert user_for_token(made.key) == user
    assert not user_for_token(made.key + "x").is_authenticated
    assert not user_for_token("mtk_\x00").is_authenticated
