from __future__ import annotations

from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.media import make_corrupt_file, make_face_video, make_speech_wav


@pytest.fixture(scope="session")
def upload_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    one_frame = folder / "one_frame.mp4"
    make_face_video(one_frame, seconds=0.04, fps=25)
    return {
        "video": make_face_video(folder / "face.mp4", seconds=0.4, fps=25),
        "one_frame": one_frame,
        "audio": make_speech_wav(folder / "speech.wav", seconds=0.5),
        "corrupt_mp4": make_corrupt_file(folder / "corrupt.mp4"),
        "text": _write(folder / "notes.txt", b"hello, not a video"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(autouse=True)
def _private_media_root(settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def api(db) -> APIClient:
    client = APIClient()
    user = UserFactory(username="owner")
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user
    return client


@pytest.fixture
def other_api(db) -> APIClient:
    client = APIClient()
    user = UserFactory(username="intruder")
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user
    return client
