"""The WebSocket handshake's Origin check of the ASGI application."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework.authtoken.models import Token

from musetalk_site.asgi import application
from tests.factories import AvatarFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@database_sync_to_async
def _avatar_feed() -> str:
    avatar = AvatarFactory(avatar_id="host")
    return f"/ws/avatars/host/?token={Token.objects.create(user=avatar.owner).key}"


async def _connect(headers: list[tuple[bytes, bytes]]) -> bool:
    communicator = WebsocketCommunicator(application, await _avatar_feed(), headers=headers)
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    return connected


async def test_a_handshake_without_an_origin_reaches_the_consumer(redis_server):
    assert await _connect([])


async def test_a_page_of_this_site_reaches_the_consumer(redis_server):
    assert await _connect([(b"origin", b"http://127.0.0.1:8000")])


@pytest.mark.parametrize("origin", [b"http://evil.example", b"null"])
async def test_a_page_of_another_site_is_refused(redis_server, origin):
    assert not await _connect([(b"origin", origin)])
