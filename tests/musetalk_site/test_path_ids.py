"""Ids that no object can have (a NUL inside) are answered like any unknown id, on every
database: PostgreSQL refuses NUL in a query, so they must not reach one."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import StreamSessionFactory

pytestmark = pytest.mark.django_db

NUL_PATHS = [
    "/avatars/a%00b",
    "/avatars/a%00b/cache/status",
    "/avatars/a%00b/events",
    "/generate/a%00b/status",
    "/generate/a%00b/download",
    "/sessions/a%00b/status",
    "/sessions/a%00b/events",
    "/chunks/a%00b/chunk_0001.mp4",
    "/hls/a%00b/master.m3u8",
    "/hls/a%00b/live_0.ts",
    "/player/chunks/a%00b/chunk_0001.mp4",
    "/player/session/a%00b/idle.mp4",
]


@pytest.mark.parametrize("path", NUL_PATHS)
def test_an_id_with_a_nul_is_not_found(path):
    session = StreamSessionFactory()
    client = APIClient()
    client.force_authenticate(session.owner)
    response = client.get(path)
    assert response.status_code == 404, response.content
    assert response.json()["message"]


def test_a_token_with_a_nul_is_no_credential():
    session = StreamSessionFactory()
    response = APIClient().get(f"/sessions/{session.session_id}/status", {"token": "a\x00b"})
    assert response.status_code == 401
    assert response.json()["message"]
