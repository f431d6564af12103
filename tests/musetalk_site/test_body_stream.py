"""The ASGI application reads a multipart upload as its body messages arrive."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from rest_framework.authtoken.models import Token

from avatars.models import Avatar
from musetalk_site.asgi import application
from musetalk_site.uploads import incoming_dir
from tests.factories import AvatarFactory
from tests.media import make_face_video

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

BOUNDARY = b"stream-boundary"
PIECE = 16 * 1024


@pytest.fixture(autouse=True)
def _private_media_root(settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real clip, grown to 2 MB with an MP4 ``free`` box (which readers skip)."""
    path = make_face_video(tmp_path_factory.mktemp("clip") / "face.mp4", seconds=0.2)
    data = path.read_bytes()
    padding = 2 * 1024 * 1024 - len(data)
    return data + struct.pack(">I4s", padding, b"free") + b"\0" * (padding - 8)


@database_sync_to_async
def _owner_of_a_ready_avatar() -> str:
    """The token of a user whose avatar "anna" is ready: preparing it again stores nothing."""
    avatar = AvatarFactory(avatar_id="anna", status=Avatar.Status.READY)
    return Token.objects.create(user=avatar.owner).key


def _upload(token: str, video: bytes) -> tuple[ApplicationCommunicator, bytes]:
    body = (
        b'--%s\r\nContent-Disposition: form-data; name="avatar_id"\r\n\r\nanna\r\n'
        b'--%s\r\nContent-Disposition: form-data; name="video_file"; filename="face.mp4"\r\n'
        b"Content-Type: video/mp4\r\n\r\n%s\r\n--%s--\r\n"
    ) % (BOUNDARY, BOUNDARY, video, BOUNDARY)
    headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", f"Token {token}".encode()),
        (b"content-type", b"multipart/form-data; boundary=" + BOUNDARY),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/avatars/prepare",
        "query_string": b"",
        "headers": headers,
    }
    return ApplicationCommunicator(application, scope), body


async def _send(communicator: ApplicationCommunicator, data: bytes, *, more: bool) -> None:
    for start in range(0, len(data), PIECE):
        last = start + PIECE >= len(data)
        message = {"body": data[start : start + PIECE], "more_body": more or not last}
        await communicator.send_input({"type": "http.request", **message})


async def _spooled_bytes(at_least: int) -> int:
    """Wait (bounded) until the upload being spooled holds ``at_least`` bytes."""
    for _ in range(300):
        sizes = [path.stat().st_size for path in incoming_dir().glob("*")]
        if sizes and max(sizes) >= at_least:
            return max(sizes)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no upload of {at_least} bytes in {incoming_dir()}")


async def test_the_file_is_written_while_its_body_still_arrives(video: bytes):
    communicator, body = _upload(await _owner_of_a_ready_avatar(), video)
    held_back = 4 * PIECE
    await _send(communicator, body[:-held_back], more=True)
    assert await _spooled_bytes(len(video) // 2) <= len(video)

    await _send(communicator, body[-held_back:], more=False)
    start = await communicator.receive_output(timeout=30)
    answer = await communicator.receive_output(timeout=30)
    assert start["status"] == 200, answer
    assert json.loads(answer["body"])["status"] == "ready"
    await communicator.wait(timeout=10)
    assert list(incoming_dir().iterdir()) == []


async def test_a_client_gone_mid_body_leaves_no_file(video: bytes):
    communicator, body = _upload(await _owner_of_a_ready_avatar(), video)
    await _send(communicator, body[: len(body) // 2], more=True)
    await _spooled_bytes(PIECE)
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=30)
    assert list(incoming_dir().iterdir()) == []
