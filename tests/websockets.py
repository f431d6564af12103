"""Helpers for consumer tests: connect a WebsocketCommunicator to the real ASGI app."""

from __future__ import annotations

import json

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework.authtoken.models import Token

from musetalk_site.asgi import application
from tests.factories import UserFactory

ORIGIN = [(b"origin", b"http://127.0.0.1")]


@database_sync_to_async
def other_user_token() -> str:
    """The API token of a fresh user who owns nothing."""
    return Token.objects.create(user=UserFactory()).key


async def ws_connect(path: str) -> tuple[WebsocketCommunicator, bool, int | None]:
    """Connect as a client would. A refused client goes away at once, as a browser's socket
    does: the consumer gets its disconnect and stops, instead of being left waiting on the
    channel layer until the test's event loop cancels it."""
    communicator = WebsocketCommunicator(application, path, headers=ORIGIN)
    connected, code = await communicator.connect()
    if not connected:
        await communicator.disconnect()
    return communicator, connected, code


async def ws_refusal(path: str) -> int | None:
    """The close code a refused client gets (None: it was not refused). The server accepts
    the handshake and closes at once, so the client sees the code, not an HTTP 403."""
    communicator = WebsocketCommunicator(application, path, headers=ORIGIN)
    connected, code = await communicator.connect()
    if connected:
        error = json.loads((await communicator.receive_output(timeout=5))["text"])
        assert error["event"] == "error" and error["message"], error  # the house error body
        message = await communicator.receive_output(timeout=5)
        code = message.get("code") if message["type"] == "websocket.close" else None
    await communicator.disconnect()
    return code
