from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from rest_framework.authtoken.models import Token

from sessions_app.models import StreamSession
from sessions_app.realtime import event_publish
from sessions_app.tokens import player_token_make, player_token_session_id
from tests.factories import StreamSessionFactory
from tests.websockets import other_user_token, ws_connect, ws_refusal

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@database_sync_to_async
def _session(**fields: object) -> tuple[StreamSession, str]:
    session = StreamSessionFactory(**fields)
    return session, Token.objects.create(user=session.owner).key


publish = database_sync_to_async(event_publish)


async def test_it_replays_after_last_event_id_then_sends_live_events(redis_server):
    session, token = await _session()
    sid = session.session_id
    for index in range(3):
        await publish(sid, {"event": "chunk", "index": index})
    communicator, connected, _ = await ws_connect(
        f"/ws/sessions/{sid}/?token={token}&last_event_id=1"
    )
    assert connected
    assert await communicator.receive_json_from(timeout=5) == {
        "id": 2,
        "event": "chunk",
        "index": 1,
    }
    assert (await communicator.receive_json_from(timeout=5))["id"] == 3
    await publish(sid, {"event": "complete", "total_chunks": 3})
    assert await communicator.receive_json_from(timeout=5) == {
        "id": 4,
        "event": "complete",
        "total_chunks": 3,
    }
    await publish(sid, {"event": "session_ended", "reason": "ended"})
    assert (await communicator.receive_json_from(timeout=5))["event"] == "session_ended"
    assert (await communicator.receive_output(timeout=5))["type"] == "websocket.close"


async def test_a_player_token_opens_only_its_own_session(redis_server):
    session, _ = await _session()
    other, _ = await _session()
    token = player_token_make(session_id=session.session_id)
    communicator, connected, _ = await ws_connect(
        f"/ws/sessions/{session.session_id}/?token={token}"
    )
    assert connected
    await communicator.disconnect()
    assert await ws_refusal(f"/ws/sessions/{other.session_id}/?token={token}") == 4404


async def test_it_refuses_anonymous_and_foreign_followers(redis_server):
    session, _ = await _session()
    assert await ws_refusal(f"/ws/sessions/{session.session_id}/") == 4401
    other = await other_user_token()
    assert await ws_refusal(f"/ws/sessions/{session.session_id}/?token={other}") == 4404


async def test_a_closed_session_says_so_and_closes(redis_server):
    session, token = await _session(status=StreamSession.Status.EXPIRED)
    communicator, connected, _ = await ws_connect(
        f"/ws/sessions/{session.session_id}/?token={token}"
    )
    assert connected
    event = await communicator.receive_json_from(timeout=5)
    assert event["event"] == "session_ended" and event["reason"] == "expired"
    assert (await communicator.receive_output(timeout=5))["type"] == "websocket.close"


async def test_chunk_urls_are_the_fragmented_copies_opened_as_the_follower_came_in(redis_server):
    session, key = await _session()
    sid = session.session_id
    chunk = {"event": "chunk", "url": "/chunks/r_req_1/chunk_0001.mp4", "index": 0}
    await publish(sid, chunk)
    player = player_token_make(session_id=sid)
    communicator, connected, _ = await ws_connect(f"/ws/sessions/{sid}/?token={player}")
    assert connected
    received = await communicator.receive_json_from(timeout=5)
    assert received["url"] == f"/player/chunks/r_req_1/chunk_0001.mp4?token={player}"
    await communicator.disconnect()
    # Came in with the API key: the url gets a player token of this session, never the key.
    communicator, connected, _ = await ws_connect(f"/ws/sessions/{sid}/?token={key}")
    assert connected
    url = (await communicator.receive_json_from(timeout=5))["url"]
    path, token = url.split("?token=")
    assert path == "/player/chunks/r_req_1/chunk_0001.mp4" and token != key
    assert player_token_session_id(token=token) == sid
    await communicator.disconnect()
