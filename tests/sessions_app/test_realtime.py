from __future__ import annotations

import pytest

from sessions_app.realtime import EventCursor, event_publish, events_after


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
        event_publish("rt-c", {"event": "chunk", "index": i})
    cursor = EventCursor("rt-c", last_id=1)
    assert [e.id for e in await cursor.replay()] == [2, 3, 4]
    assert await cursor.live({"id": 3, "payload": {}}) == []  # already replayed
    event_publish("rt-c", {"event": "chunk", "index": 4})
    event_publish("rt-c", {"event": "chunk", "index": 5})
    # The live message of id 6 overtook id 5: both come out, in order.
    delivered = await cursor.live({"id": 6, "payload": {"event": "chunk", "index": 5}})
    assert [e.id for e in delivered] == [5, 6]
    assert [e.id for e in await cursor.live({"id": 5, "payload": {}})] == []
