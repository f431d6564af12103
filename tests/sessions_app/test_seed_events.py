"""The session feed as the seed API's clients use it: only new events for a new follower,
chunk urls they can fetch and append (fragmented, with a token), headers at once."""

from __future__ import annotations

import json
import re

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient, Client
from rest_framework.authtoken.models import Token

from musetalk_site.sse import OPENING
from sessions_app.generate_stream import seed_event
from sessions_app.realtime import SessionEvent, event_publish, join_point
from sessions_app.tokens import player_token_make, player_token_session_id
from tests.factories import StreamSessionFactory, UserFactory

CONFIG = re.compile(r'<script id="musetalk-player-config" type="application/json">(.*?)</script>')


def _events(*names: tuple[str, str]) -> list[SessionEvent]:
    return [
        SessionEvent(index + 1, {"event": name, "request_id": request_id})
        for index, (name, request_id) in enumerate(names)
    ]


def _utterance(request_id: str, *, ended: bool = True) -> list[tuple[str, str]]:
    names = [("speaking_started", request_id), ("chunk", request_id), ("chunk", request_id)]
    if ended:
        names += [("complete", request_id), ("speaking_ended", request_id)]
    return names


def test_a_new_follower_starts_after_the_latest_event_when_nothing_is_under_way():
    assert join_point([]) == 0
    assert join_point(_events(*_utterance("a"))) == 5
    assert join_point(_events(*_utterance("a"), *_utterance("b"))) == 10
    interrupted = [("speaking_started", "a"), ("chunk", "a"), ("interrupted", "a")]
    assert join_point(_events(*interrupted)) == 3
    failed_in_the_queue = [*_utterance("a"), ("error", "b")]  # never started
    assert join_point(_events(*failed_in_the_queue)) == 6


def test_a_new_follower_gets_the_utterance_under_way_from_its_start():
    assert join_point(_events(*_utterance("a", ended=False))) == 0
    assert join_point(_events(*_utterance("a"), *_utterance("b", ended=False))) == 5
    # ``complete`` is out, ``speaking_ended`` not yet: every chunk is announced, it is over.
    assert join_point(_events(*_utterance("a")[:-1])) == 4


def test_the_seed_answer_tells_chunks_and_the_end_as_the_seed_does():
    sid = "s1"
    chunk = {"event": "chunk", "url": "/chunks/r_req_1/chunk_0001.mp4", "index": 0}
    told = seed_event({**chunk, "request_id": "r_req_1"}, session_id=sid)
    assert told is not None and told["index"] == 0
    assert told["url"].startswith("/player/chunks/r_req_1/chunk_0001.mp4?token=")
    assert player_token_session_id(token=told["url"].split("?token=")[1]) == sid
    assert seed_event({"event": "complete", "total_chunks": 3}, session_id=sid) == {
        "event": "complete",
        "total_chunks": 3,
    }
    failed = seed_event({"event": "error", "message": "boom", "request_id": "r"}, session_id=sid)
    assert failed == {"event": "error", "message": "boom", "request_id": "r"}
    stopped = seed_event({"event": "interrupted", "request_id": "r"}, session_id=sid)
    assert stopped is not None and stopped["event"] == "error"
    assert seed_event({"event": "speaking_started", "request_id": "r"}, session_id=sid) is None
    assert seed_event({"event": "speaking_ended", "request_id": "r"}, session_id=sid) is None


# -- the SSE view ---------------------------------------------------------------------------


@database_sync_to_async
def _session_and_token() -> tuple[str, str]:
    session = StreamSessionFactory()
    return session.session_id, Token.objects.create(user=session.owner).key


async def _publish(sid: str, *names: tuple[str, str]) -> list[int]:
    ids = []
    for name, request_id in names:
        payload: dict = {"event": name, "request_id": request_id}
        if name == "chunk":
            payload["url"] = f"/chunks/{request_id}/chunk_0001.mp4"
        ids.append(await database_sync_to_async(event_publish)(sid, payload))
    return ids


async def _read(response, count: int) -> list[str]:
    """The first ``count`` frames of an SSE response, as sent."""
    frames, buffer = [], ""
    async for part in response.streaming_content:
        buffer += part.decode() if isinstance(part, bytes) else part
        while "\n\n" in buffer and len(frames) < count:
            frame, buffer = buffer.split("\n\n", 1)
            frames.append(frame + "\n\n")
        if len(frames) >= count:
            break
    return frames


def _data(frame: str) -> dict:
    [line] = [line for line in frame.splitlines() if line.startswith("data: ")]
    return json.loads(line[6:])


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_new_connection_gets_no_finished_utterance_but_a_resumed_one_gets_all(
    redis_server,
):
    sid, token = await _session_and_token()
    await _publish(sid, *_utterance("old_req_1"))
    client = AsyncClient()
    fresh = await client.get(f"/sessions/{sid}/events?token={token}")
    assert fresh.status_code == 200
    frames = aiter(fresh.streaming_content)
    assert await anext(frames) == OPENING.encode()  # before any event is published
    started = await _publish(sid, *_utterance("new_req_2", ended=False))
    new = [_data(frame) for frame in await _read(fresh, 3)]
    assert [(e["event"], e["request_id"]) for e in new] == _utterance("new_req_2", ended=False)

    resumed = await client.get(f"/sessions/{sid}/events?token={token}&last_event_id=0")
    old = [_data(frame) for frame in (await _read(resumed, 9))[1:]]
    assert [e["request_id"] for e in old] == ["old_req_1"] * 5 + ["new_req_2"] * 3
    assert started[0] == 6


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_new_connection_mid_utterance_gets_its_events_so_far_in_order(redis_server):
    sid, token = await _session_and_token()
    ids = await _publish(sid, *_utterance("old_req_1"), *_utterance("now_req_2", ended=False))
    response = await AsyncClient().get(
        f"/sessions/{sid}/events", headers={"Authorization": f"Token {token}"}
    )
    frames = (await _read(response, 4))[1:]
    assert [frame.splitlines()[0] for frame in frames] == [f"id: {i}" for i in ids[5:]]
    assert [_data(frame)["event"] for frame in frames] == ["speaking_started", "chunk", "chunk"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_chunk_urls_are_the_fragmented_copies_opened_as_the_follower_needs(redis_server):
    sid, token = await _session_and_token()
    await _publish(sid, ("speaking_started", "r_req_1"), ("chunk", "r_req_1"))
    response = await AsyncClient().get(f"/sessions/{sid}/events?token={token}&last_event_id=0")
    chunk = _data((await _read(response, 3))[2])
    path, _, query = chunk["url"].partition("?token=")
    assert path == "/player/chunks/r_req_1/chunk_0001.mp4"
    assert player_token_session_id(token=query) == sid
    assert chunk["request_id"] == "r_req_1"  # the other keys as they were
    # A player let in with its player token finds that same token on the url.
    own = player_token_make(session_id=sid)
    response = await AsyncClient().get(f"/sessions/{sid}/events?token={own}&last_event_id=0")
    chunk = _data((await _read(response, 3))[2])
    assert chunk["url"] == f"/player/chunks/r_req_1/chunk_0001.mp4?token={own}"
    # One with a header (or a cookie) fetches with it: the bare path.
    headers = {"Authorization": f"Token {token}"}
    response = await AsyncClient().get(f"/sessions/{sid}/events?last_event_id=0", headers=headers)
    assert _data((await _read(response, 3))[2])["url"] == "/player/chunks/r_req_1/chunk_0001.mp4"


# -- player pages -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_owner_opens_a_player_page_with_the_authorization_header(redis_server):
    session = StreamSessionFactory()
    owner = Token.objects.create(user=session.owner).key
    stranger = Token.objects.create(user=UserFactory()).key
    sid = session.session_id
    for page in (f"/player/session/{sid}", f"/player/mobile?session_id={sid}"):
        response = Client().get(page, headers={"Authorization": f"Token {owner}"})
        assert response.status_code == 200 and response["Cache-Control"] == "no-store"
        config = json.loads(CONFIG.search(response.content.decode()).group(1))
        assert player_token_session_id(token=config["token"]) == sid
        assert config["events_url"] == f"/sessions/{sid}/events?token={config['token']}"
        refused = Client().get(page, headers={"Authorization": f"Token {stranger}"})
        assert refused.status_code == 404 and sid not in refused.content.decode()
    # A ?token= is taken as a player token, whatever the header says.
    both = Client().get(
        f"/player/session/{sid}?token={owner}", headers={"Authorization": f"Token {owner}"}
    )
    assert both.status_code == 401
