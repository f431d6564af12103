"""Chunk URLs tell a caller who may not read a session nothing about it: an existing
request id and a missing one get the same status and the same body."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from sessions_app.models import StreamChunk, StreamRequest, StreamSession
from sessions_app.tokens import player_token_make
from tests.factories import StreamRequestFactory, StreamSessionFactory, UserFactory

pytestmark = [pytest.mark.django_db]

CHUNK_URLS = ("/chunks/{}/chunk_0001.mp4", "/player/chunks/{}/chunk_0001.mp4")
MISSING = "stream_req_ffffffff"


@pytest.fixture
def owned(redis_server) -> StreamRequest:
    """A chunk of the owner's session, on disk."""
    request = StreamRequestFactory(
        session=StreamSessionFactory(), status=StreamRequest.Status.COMPLETED
    )
    name = f"chunks/{request.request_id}/chunk_0001.mp4"
    path = Path(settings.MEDIA_ROOT) / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00\x00\x00\x18ftypisom")
    StreamChunk.objects.create(request=request, index=0, file=name, duration=1)
    return request


def _api_key() -> str:
    return Token.objects.create(user=UserFactory()).key


def _callers(owned: StreamRequest) -> dict[str, tuple[APIClient, str]]:
    """Callers without access to ``owned``'s session, and the query each one sends."""
    intruder = APIClient()
    intruder.credentials(HTTP_AUTHORIZATION=f"Token {_api_key()}")
    signed_in = APIClient()
    signed_in.force_login(UserFactory())
    other_session = StreamSessionFactory()
    return {
        "another user (token header)": (intruder, ""),
        "another user (cookie)": (signed_in, ""),
        "another user (?token=api key)": (APIClient(), f"?token={_api_key()}"),
        "a player of another session": (
            APIClient(),
            f"?token={player_token_make(session_id=other_session.session_id)}",
        ),
        "an anonymous caller": (APIClient(), ""),
        "an anonymous caller with a bad token": (APIClient(), "?token=not-a-token"),
    }


@pytest.mark.parametrize("url", CHUNK_URLS)
def test_existing_and_missing_request_ids_look_the_same_to_callers_without_access(
    owned: StreamRequest, url: str
):
    session_id = owned.session.session_id
    for case, (client, query) in _callers(owned).items():
        existing = client.get(url.format(owned.request_id) + query)
        missing = client.get(url.format(MISSING) + query)
        assert existing.status_code in (401, 404), case
        assert (existing.status_code, existing.content) == (
            missing.status_code,
            missing.content,
        ), case
        assert session_id not in existing.content.decode(), case


@pytest.mark.parametrize("url", CHUNK_URLS)
def test_another_users_chunk_is_a_plain_404(owned: StreamRequest, url: str):
    intruder = APIClient()
    intruder.credentials(HTTP_AUTHORIZATION=f"Token {_api_key()}")
    response = intruder.get(url.format(owned.request_id))
    assert response.status_code == 404
    assert response.json() == {"message": "Chunk not found.", "extra": {}}


def test_the_owner_and_the_sessions_player_still_get_the_chunk(owned: StreamRequest):
    session: StreamSession = owned.session
    owner = APIClient()
    owner.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=session.owner).key}")
    assert owner.get(CHUNK_URLS[0].format(owned.request_id)).status_code == 200
    token = player_token_make(session_id=session.session_id)
    player = APIClient().get(CHUNK_URLS[0].format(owned.request_id) + f"?token={token}")
    assert player.status_code == 200
    assert StreamSession.objects.get(pk=session.pk).chunks_served == 2
