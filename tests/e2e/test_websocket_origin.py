"""WebSocket handshakes on the real stack: native apps send no Origin, browsers always do."""

from __future__ import annotations

import json

import pytest
import websocket
from rest_framework.authtoken.models import Token

from musetalk_site.stack import Stack
from tests.factories import AvatarFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _avatar_feed_url(stack: Stack, username: str) -> str:
    """The progress feed of a ready avatar of a new user, with that user's token."""
    user = UserFactory(username=username)
    AvatarFactory(owner=user, avatar_id="host")
    token = Token.objects.create(user=user).key
    return stack.base_url.replace("http://", "ws://") + f"/ws/avatars/host/?token={token}"


def test_a_native_app_without_an_origin_header_is_let_in(live_stack: Stack):
    url = _avatar_feed_url(live_stack, "native-app")
    ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
    try:
        snapshot = json.loads(ws.recv())
    finally:
        ws.close()
    assert snapshot["avatar_id"] == "host" and snapshot["event"] == "ready"


def test_a_page_of_another_site_is_still_refused(live_stack: Stack):
    url = _avatar_feed_url(live_stack, "other-site")
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(url, timeout=30, origin="http://evil.example")
    assert refused.value.status_code == 403


def test_a_page_of_this_site_is_let_in(live_stack: Stack):
    url = _avatar_feed_url(live_stack, "this-site")
    ws = websocket.create_connection(url, timeout=30, origin=live_stack.base_url)
    try:
        assert json.loads(ws.recv())["event"] == "ready"
    finally:
        ws.close()


def test_a_refused_client_gets_the_consumers_close_code_and_reason(live_stack: Stack):
    """Not a bare HTTP 403: a native app can tell a bad token from a missing avatar."""
    url = _avatar_feed_url(live_stack, "close-codes")
    missing = url.replace("/ws/avatars/host/", "/ws/avatars/nobody/")
    anonymous = url.split("?")[0]
    for target, code in ((anonymous, 4401), (missing, 4404)):
        ws = websocket.create_connection(target, timeout=30, suppress_origin=True)
        try:
            error = json.loads(ws.recv())
            opcode, frame = ws.recv_data(control_frame=True)
        finally:
            ws.close()
        assert error["event"] == "error" and error["message"] and "extra" in error
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame[:2], "big") == code, frame
