from __future__ import annotations

from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import AvatarFactory, UserFactory
from tests.media import make_speech_wav


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_wav(tmp_path_factory.mktemp("audio") / "speech.wav", seconds=0.5)


@pytest.fixture(autouse=True)
def _private_media_root(settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def _client(username: str) -> APIClient:
    client = APIClient()
    user = UserFactory(username=username)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user
    return client


@pytest.fixture
def api(db) -> APIClient:
    client = _client("owner")
    AvatarFactory(owner=client.user, avatar_id="anna")
    return client


@pytest.fixture
def other_api(db) -> APIClient:
    return _client("intruder")
