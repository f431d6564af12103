"""CORS on the seed API's paths: a preflight is answered without credentials (never a 401)
and answers to an allowed origin carry its header, errors and anonymous access included."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.factories import UserFactory
from tests.musetalk_site.test_security_settings import APP, _apply, _preflight, _settings_from

SEED_PATHS = (
    "/",
    "/health",
    "/stats",
    "/stats/cache",
    "/capabilities",
    "/avatars/list",
    "/avatars/prepare",
    "/avatars/host/video",
    "/avatars/host/cache/status",
    "/generate",
    "/generate/stream",
    "/generate/req_1/status",
    "/sessions/create",
    "/sessions/abc/events",
    "/sessions/live",
    "/chunks/stream_req_1/chunk_0001.mp4",
    "/player/chunks/stream_req_1/chunk_0001.mp4",
    "/hls/sessions/create",
    "/hls/sessions/abc/live.m3u8",
    "/hls/sessions/abc/segments/segment_00001.ts",
    "/hls/sessions/abc/status",
)


@pytest.fixture(scope="module")
def cors() -> dict[str, Any]:
    return _settings_from({"CORS_ALLOWED_ORIGINS": APP})


@pytest.mark.django_db
def test_every_seed_path_answers_a_preflight_from_an_allowed_origin(settings, cors):
    _apply(settings, cors)
    for path in SEED_PATHS:
        response = _preflight(Client(), path, APP)
        assert response.status_code == 200, path
        assert response["Access-Control-Allow-Origin"] == APP, path
        assert "last-event-id" in response["Access-Control-Allow-Headers"], path


@pytest.mark.django_db(transaction=True)  # the SSE feeds are async views
def test_answers_carry_the_header_refusals_and_anonymous_access_included(settings, cors):
    _apply(settings, cors)
    client = Client(headers={"origin": APP})
    for path in ("/stats", "/sessions/abc/events", "/avatars/list"):
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert refused["Access-Control-Allow-Origin"] == APP, path
    UserFactory(username="kiosk")
    settings.ANONYMOUS_ACCESS_USER = "kiosk"
    for path in ("/stats", "/stats/cache", "/capabilities", "/"):
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert answer["Access-Control-Allow-Origin"] == APP, path
    assert client.get("/sessions/abc/events").status_code == 404  # signed in as kiosk
