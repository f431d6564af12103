from __future__ import annotations

import pytest
import redis
from asgiref.sync import sync_to_async

from musetalk_site.redis_conn import redis_client
from sessions_app import realtime
from sessions_app.realtime import EventCursor, event_publish, events_after
from tests.factories import StreamSessionFactory

pytestmark = pytest.mark.django_db(transaction=True)
# Numbering reads the database now and then: async tests publish from a thread.
publish = sync_to_async(event_publish)


def test_events_are_numbered_in_order_and_stored(redis_server):
    ids = [event_publish("rt-a", {"event": "chunk", "index": i}) for i in range(3)]
    assert ids == [1, 2, 3]
    assert [e.payload["index"] for e in events_after("rt-a", 1)] == [1, 2]


def test_events_of_a_stopped_request_are_refused(redis_server):
    assert event_publish("rt-b", {"event": "chunk"}, unless_stopped="r1") == 1
    assert event_publish("rt-b", {"event": "interrupted"}, stop="r1") == 2
    assert event_publish("rt-b", {"event": "chunk"}, unless_stopped="r1") is None
    assert event_publish("rt-b", {"event": "chunk"}, unless_stopped="r2") == 3


@pytest.mark.asyncio
async def test_the_cursor_drops_duplicates_and_fills_gaps_from_the_store(redis_server):
    for i in range(4):
        await publish("rt-c", {"event": "chunk", "index": i})
    cursor = EventCursor("rt-c", last_id=1)
    assert [e.id for e in await cursor.replay()] == [2, 3, 4]
    assert await cursor.live({"id": 3, "payload": {}}) == []  # already replayed
    await publish("rt-c", {"event": "chunk", "index": 4})
    await publish("rt-c", {"event": "chunk", "index": 5})
    # The live message of id 6 overtook id 5: both come out, in order.
    delivered = await cursor.live({"id": 6, "payload": {"event": "chunk", "index": 5}})
    assert [e.id for e in delivered] == [5, 6]
    assert [e.id for e in await cursor.live({"id": 5, "payload": {}})] == []


def test_ids_never_go_backwards_after_redis_loses_its_data(redis_server, monkeypatch):
    session = StreamSessionFactory()
    before = [event_publish(session.session_id, {"event": "chunk", "index": i}) for i in range(3)]
    redis_client().flushdb()  # a restart without persistence, a flush, a new server
    monkeypatch.setattr(realtime, "_floors", {})  # and a process that never numbered it
    after = event_publish(session.session_id, {"event": "chunk", "index": 3})
    assert before == [1, 2, 3] and after is not None and after > 3


def test_the_floor_is_raised_before_any_id_passes_it(redis_server, monkeypatch):
    monkeypatch.setattr(realtime, "FLOOR_STEP", 2)
    session = StreamSessionFactory()
    for index in range(7):
        event_id = event_publish(session.session_id, {"event": "chunk", "index": index})
        session.refresh_from_db()
        assert event_id == index + 1 and session.event_floor >= event_id


@pytest.mark.asyncio
async def test_a_follower_from_before_the_loss_gets_every_later_event(redis_server):
    session = await sync_to_async(StreamSessionFactory)()
    for index in range(3):
        await publish(session.session_id, {"event": "chunk", "index": index})
    cursor = EventCursor(session.session_id, last_id=3)  # its Last-Event-ID
    await sync_to_async(redis_client().flushdb)()
    new_id = await publish(session.session_id, {"event": "chunk", "index": 3})
    delivered = await cursor.live({"id": new_id, "payload": {"event": "chunk", "index": 3}})
    assert [event.payload["index"] for event in delivered] == [3]


def _append_failing(monkeypatch: pytest.MonkeyPatch, *, times: int, after_storing: bool) -> None:
    """``_append`` raises a connection error ``times`` times: before it reaches Redis (Redis is
    down), or after its event was stored (the reply was lost)."""
    monkeypatch.setattr(realtime, "REDIS_RETRY_SECONDS", 0.01)
    real_append = realtime._append
    left = [times]

    def append(session_id: str, args: list[str | int]) -> int:
        if left[0] and not after_storing:
            left[0] -= 1
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        event_id = real_append(session_id, args)
        if left[0]:
            left[0] -= 1
            raise redis.ConnectionError("Connection closed by server.")
        return event_id

    monkeypatch.setattr(realtime, "_append", append)


def test_an_event_published_while_redis_is_down_waits_for_it(redis_server, monkeypatch):
    _append_failing(monkeypatch, times=3, after_storing=False)
    assert event_publish("rt-d", {"event": "chunk", "index": 0}) == 1
    assert [e.payload for e in events_after("rt-d", 0)] == [{"event": "chunk", "index": 0}]


def test_an_event_whose_reply_was_lost_is_not_stored_twice(redis_server, monkeypatch):
    _append_failing(monkeypatch, times=1, after_storing=True)
    assert event_publish("rt-e", {"event": "chunk", "index": 0}) == 1
    assert [e.id for e in events_after("rt-e", 0)] == [1]


def test_an_event_fails_once_redis_stays_down_too_long(redis_server, monkeypatch):
    monkeypatch.setattr(realtime, "REDIS_WAIT_SECONDS", 0.05)
    _append_failing(monkeypatch, times=1000, after_storing=False)
    with pytest.raises(redis.ConnectionError):
        event_publish("rt-f", {"event": "chunk", "index": 0})
