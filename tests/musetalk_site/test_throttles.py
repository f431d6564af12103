"""Request rates from the environment: token requests per client address, uploads per user.
A refused request gets 429 with the error body and ``Retry-After``."""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from musetalk_site.env import env_rate
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SETTINGS_FILE = Path(__file__).resolve().parents[2] / "musetalk_site" / "settings.py"
RATE_VARIABLES = ("THROTTLE_TOKEN_RATE", "THROTTLE_UPLOAD_RATE", "TRUSTED_PROXY_COUNT")


@pytest.fixture(autouse=True)
def _fresh_counts() -> Iterator[None]:
    """The counts live in the cache, which outlives each test's database."""
    cache.clear()
    yield
    cache.clear()


def _settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """The settings a fresh process computes from this environment."""
    for name in RATE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE))


def _client(username: str) -> APIClient:
    client = APIClient()
    user = UserFactory(username=username)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def _assert_throttled(response: Any, wait: int) -> None:
    """429 with about ``wait`` seconds to wait (a second or two less on a slow machine: the
    window started at the first request)."""
    assert response.status_code == 429
    waited = int(response["Retry-After"])
    assert wait - 2 <= waited <= wait
    assert response.json() == {
        "message": f"Request was throttled. Expected available in {waited} seconds.",
        "extra": {"wait_seconds": waited},
    }


def test_the_default_rates(monkeypatch):
    computed = _settings_from(monkeypatch)
    assert computed["THROTTLE_TOKEN_RATE"] == "30/min"
    assert computed["THROTTLE_UPLOAD_RATE"] == "120/min"
    assert computed["REST_FRAMEWORK"]["NUM_PROXIES"] == 0


def test_the_rates_come_from_the_environment(monkeypatch):
    computed = _settings_from(
        monkeypatch,
        THROTTLE_TOKEN_RATE="5/hour",
        THROTTLE_UPLOAD_RATE=" 10/Min ",
        TRUSTED_PROXY_COUNT="1",
    )
    assert computed["THROTTLE_TOKEN_RATE"] == "5/hour"
    assert computed["THROTTLE_UPLOAD_RATE"] == "10/min"
    assert computed["REST_FRAMEWORK"]["NUM_PROXIES"] == 1


@pytest.mark.parametrize(
    "raw,expected",
    [("2/s", "2/s"), ("2/second", "2/second"), ("07/Hour", "7/hour"), ("1/day", "1/day")],
)
def test_env_rate_reads_every_drf_period(raw, expected):
    assert env_rate("X_RATE", None, environ={"X_RATE": raw}) == expected
    assert env_rate("X_RATE", "9/min", environ={}) == "9/min"


@pytest.mark.parametrize("raw", ["0", "", "  "])
def test_zero_or_empty_turns_a_rate_off(monkeypatch, raw):
    assert _settings_from(monkeypatch, THROTTLE_UPLOAD_RATE=raw)["THROTTLE_UPLOAD_RATE"] is None


@pytest.mark.parametrize("raw", ["30", "30/fortnight", "0/min", "-1/min", "x/min", "3/min/2"])
def test_a_bad_rate_is_refused_naming_the_variable(monkeypatch, raw):
    with pytest.raises(ImproperlyConfigured, match="THROTTLE_TOKEN_RATE"):
        _settings_from(monkeypatch, THROTTLE_TOKEN_RATE=raw)


def test_uploads_past_the_rate_get_429_with_retry_after_and_the_error_body(settings):
    settings.THROTTLE_UPLOAD_RATE = "3/min"
    client = _client("uploader")
    # The three upload operations share one count, whatever they answer (400: no file).
    assert client.post("/avatars/prepare", {"avatar_id": "anna"}).status_code == 400
    assert client.post("/generate", {"avatar_id": "anna"}).status_code == 400
    assert client.post("/sessions/nope/stream", {}).status_code == 404

    _assert_throttled(client.post("/generate", {"avatar_id": "anna"}), wait=60)
    _assert_throttled(client.post("/avatars/prepare", {"avatar_id": "anna"}), wait=60)
    _assert_throttled(client.post("/sessions/nope/stream", {}), wait=60)


def test_the_upload_rate_counts_each_user_apart_and_leaves_reads_alone(settings):
    settings.THROTTLE_UPLOAD_RATE = "1/min"
    first, second = _client("first"), _client("second")
    assert first.post("/generate", {"avatar_id": "anna"}).status_code == 400
    assert first.post("/generate", {"avatar_id": "anna"}).status_code == 429
    assert second.post("/generate", {"avatar_id": "anna"}).status_code == 400
    for _ in range(3):
        assert first.get("/generate/").status_code == 200


def test_no_upload_rate_means_no_limit(settings):
    settings.THROTTLE_UPLOAD_RATE = None
    client = _client("unlimited")
    for _ in range(5):
        assert client.post("/generate", {"avatar_id": "anna"}).status_code == 400


def test_token_requests_past_the_rate_get_429_per_client_address(settings):
    settings.THROTTLE_TOKEN_RATE = "2/hour"
    client = APIClient()
    wrong = {"username": "alice", "password": "nope"}
    for _ in range(2):
        assert client.post("/api/auth/token/", wrong).status_code == 400

    _assert_throttled(client.post("/api/auth/token/", wrong), wait=3600)
    other = client.post("/api/auth/token/", wrong, REMOTE_ADDR="10.0.0.2")
    assert other.status_code == 400


def test_a_client_cannot_pick_its_address_with_x_forwarded_for(settings):
    settings.THROTTLE_TOKEN_RATE = "1/min"
    client = APIClient()
    wrong = {"username": "alice", "password": "nope"}
    assert client.post("/api/auth/token/", wrong).status_code == 400
    spoofed = client.post("/api/auth/token/", wrong, HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert spoofed.status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_address_counts(settings):
    settings.THROTTLE_TOKEN_RATE = "1/min"
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    client = APIClient()
    wrong = {"username": "alice", "password": "nope"}
    first = client.post("/api/auth/token/", wrong, HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert first.status_code == 400
    again = client.post("/api/auth/token/", wrong, HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert again.status_code == 429
    other = client.post("/api/auth/token/", wrong, HTTP_X_FORWARDED_FOR="203.0.113.8")
    assert other.status_code == 400
