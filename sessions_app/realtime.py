"""Session events: numbered, stored, then broadcast; followers get each one once, in order.

Every event of a session gets the next id of a per-session Redis counter and is appended
to a capped per-session Redis list in the same Lua call, so the stored list is always in
id order. Only then is it sent to the session's channel-layer group. Followers (SSE and
WebSocket) subscribe first, replay the stored events after their last id, then take live
ones through an ``EventCursor``: an id at or below the last one delivered is dropped, and
a jump in ids (a live message that overtook another, or one the layer dropped) is filled
from the store. So nothing is lost, duplicated or reordered at the switch.

A follower that names no last id is new: it starts at ``join_point`` of the stored events,
so it gets only what happens from now on, except for an utterance already under way, whose
events so far it gets first, in order. Finished utterances are never replayed to it.

A request that was interrupted is added to the session's "stopped" set by the same kind
of atomic call, and the worker's later events for it are refused: once ``interrupted``
has an id, no chunk of that request can get a larger one.

Ids never go backwards, even when Redis loses its data (a restart without its append-only
file, a flush, a new server): the database keeps a floor per session (``event_floor``) that
no issued id exceeds. Redis refuses to number past the floor until it has been raised in
the database (by ``FLOOR_STEP`` at a time), and a counter Redis no longer has starts again
from the floor read fresh from the database. A follower whose ``Last-Event-ID`` came before
the loss then sees a jump in ids and reads the store, so it loses nothing published after.

An event published while Redis is down (killed, and being restarted by the launcher) waits
for it, up to ``REDIS_WAIT_SECONDS``, so a running utterance goes on, or its ``error`` event
is stored, instead of being lost with the outage. A call cut off with its connection may have
been carried out before it went: the retry looks for the event in the store first, so no event
is stored twice (every payload is unique: it names its request, its chunk or its session).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from musetalk_site import realtime
from musetalk_site.redis_conn import redis_client
from sessions_app.models import StreamSession

logger = logging.getLogger(__name__)

BACKLOG_SIZE = 2000  # events kept per session for late and reconnecting followers
MESSAGE_TYPE = "session.event"  # handled by SessionEventsConsumer.session_event
TERMINAL_EVENTS = {"session_ended"}
# Events after which an utterance is over (``speaking_ended`` follows ``complete`` and
# ``error`` at once; ``interrupted`` may come without it, for one that had not started).
UTTERANCE_OVER = {"complete", "error", "interrupted", "speaking_ended"}

# KEYS: counter, list, stopped set. ARGV: payload, refuse-if-stopped request id, request id
# to stop, backlog size, key ttl, floor. Returns the new id; 0 when refused; NEEDS_START when
# Redis has no counter (start it from the database's floor); NEEDS_FLOOR when the next id would
# pass the floor (raise it in the database first).
NEEDS_START, NEEDS_FLOOR = -1, -2
_APPEND = """
if ARGV[2] ~= '' and redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then return 0 end
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if tonumber(current) >= tonumber(ARGV[6]) then return -2 end
if ARGV[3] ~= '' then redis.call('SADD', KEYS[3], ARGV[3]) end
local id = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], id .. ' ' .. ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return id
"""
FLOOR_STEP = 1000  # ids a session may take before its floor is raised in the database again
REDIS_WAIT_SECONDS = 30.0  # how long an event waits for Redis to come back before it fails
REDIS_RETRY_SECONDS = 0.5
_floors: dict[str, int] = {}  # this process's last known floor per session (only ever lower)


@dataclass(frozen=True)
class SessionEvent:
    id: int
    payload: dict[str, Any]


def session_group(session_id: str) -> str:
    return realtime.group_name("session", session_id)


def _keys(session_id: str) -> list[str]:
    prefix = f"musetalk:session:{session_id}:"
    return [prefix + "seq", prefix + "events", prefix + "stopped"]


def _key_ttl() -> int:
    return settings.SESSION_TTL_SECONDS * 2


def event_publish(
    session_id: str, payload: dict[str, Any], *, unless_stopped: str = "", stop: str = ""
) -> int | None:
    """Number, store and broadcast ``payload``; its id, or None when refused.

    ``unless_stopped``: refuse if that request was stopped. ``stop``: mark that request
    stopped (atomically with numbering this event).
    """
    data = json.dumps(payload, cls=DjangoJSONEncoder)
    event_id = _append_waiting(
        session_id, data, [data, unless_stopped, stop, BACKLOG_SIZE, _key_ttl()]
    )
    if not event_id:
        return None
    _broadcast(session_id, event_id, json.loads(data))
    return event_id


def _append_waiting(session_id: str, data: str, args: list[str | int]) -> int:
    """``_append``, waiting out a Redis that is down (see the module docstring)."""
    deadline = time.monotonic() + REDIS_WAIT_SECONDS
    try:
        return _append(session_id, args)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        logger.warning("session %s: Redis unreachable (%s); the event waits", session_id, exc)
    while True:
        time.sleep(REDIS_RETRY_SECONDS)
        try:
            return _stored_id(session_id, data) or _append(session_id, args)
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() >= deadline:
                raise


def _stored_id(session_id: str, data: str) -> int:
    """The id under which ``data`` is stored already; 0 when it is not."""
    raw = cast("list[bytes]", redis_client().lrange(_keys(session_id)[1], 0, -1))
    for item in reversed(raw):
        head, _, body = item.decode().partition(" ")
        if body == data:
            return int(head)
    return 0


def _append(session_id: str, args: list[str | int]) -> int:
    """Number and store one event (the Lua script), keeping ids under the session's floor."""
    script = redis_client().register_script(_APPEND)  # EVALSHA, loaded once per server
    keys = _keys(session_id)
    for _ in range(3):  # at most: start the counter, raise the floor, number
        result = int(script(keys=keys, args=[*args, _floors.get(session_id, 0)]))
        if result == NEEDS_START:
            floor = _floor_read(session_id)
            redis_client().set(keys[0], floor, nx=True, ex=_key_ttl())
        elif result == NEEDS_FLOOR:
            _floor_raise(session_id, int(redis_client().get(keys[0]) or 0) + FLOOR_STEP)
        else:
            return result
    raise RuntimeError(f"could not number an event of session {session_id}")


def _floor_read(session_id: str) -> int:
    floor = (
        StreamSession.objects.filter(session_id=session_id)
        .values_list("event_floor", flat=True)
        .first()
    )
    _floors[session_id] = floor or 0
    return _floors[session_id]


def _floor_raise(session_id: str, floor: int) -> None:
    """Raise the session's floor to at least ``floor`` (never lower it)."""
    sessions = StreamSession.objects.filter(session_id=session_id)
    sessions.filter(event_floor__lt=floor).update(event_floor=floor)
    stored = sessions.values_list("event_floor", flat=True).first()
    # A session without a row (deleted meanwhile) has nothing left to protect.
    _floors[session_id] = floor if stored is None else stored


def _broadcast(session_id: str, event_id: int, payload: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": MESSAGE_TYPE, "id": event_id, "payload": payload}
    try:
        async_to_sync(layer.group_send)(session_group(session_id), message)
    except Exception:
        # Stored already: followers fill the gap from the store.
        logger.warning("could not broadcast event %s of %s", event_id, session_id, exc_info=True)


def events_after(session_id: str, last_id: int) -> list[SessionEvent]:
    """The stored events with an id above ``last_id``, oldest first."""
    # The client does not decode responses, so the items are bytes.
    raw = cast("list[bytes]", redis_client().lrange(_keys(session_id)[1], 0, -1))
    events = []
    for item in raw:
        head, _, body = item.decode().partition(" ")
        if int(head) > last_id:
            events.append(SessionEvent(int(head), json.loads(body)))
    return events


def last_event_id(session_id: str) -> int:
    value = redis_client().get(_keys(session_id)[0])
    return int(value) if value else 0


class EventCursor:
    """Hands out a session's events in id order, each exactly once (see the module doc)."""

    def __init__(self, session_id: str, last_id: int = 0) -> None:
        self.session_id = session_id
        self.last_id = last_id

    async def replay(self) -> list[SessionEvent]:
        """Stored events after the last one handed out."""
        stored = await sync_to_async(events_after, thread_sensitive=False)(
            self.session_id, self.last_id
        )
        return self._advance(stored)

    async def join(self) -> list[SessionEvent]:
        """For a new follower: the stored events after ``join_point``, which it starts at."""
        stored = await sync_to_async(events_after, thread_sensitive=False)(self.session_id, 0)
        self.last_id = join_point(stored)
        return self._advance(stored)

    async def live(self, message: dict[str, Any]) -> list[SessionEvent]:
        """What to deliver for one channel-layer message."""
        event_id = int(message.get("id", 0))
        if event_id <= self.last_id:
            return []
        if event_id == self.last_id + 1:
            return self._advance([SessionEvent(event_id, message.get("payload", {}))])
        return await self.replay()  # an event is missing before this one: read the store

    def _advance(self, events: list[SessionEvent]) -> list[SessionEvent]:
        fresh = [event for event in events if event.id > self.last_id]
        if fresh:
            self.last_id = fresh[-1].id
        return fresh


def join_point(events: list[SessionEvent]) -> int:
    """The id a new follower starts after, given the stored events (oldest first): the
    latest one's, or, while the latest utterance to start is not over, the one before that
    utterance's ``speaking_started``."""
    over: set[str] = set()
    for event in reversed(events):
        name, request_id = event.payload.get("event"), event.payload.get("request_id")
        if name in UTTERANCE_OVER and isinstance(request_id, str):
            over.add(request_id)
        elif name == "speaking_started":
            return events[-1].id if request_id in over else event.id - 1
    return events[-1].id if events else 0


def is_terminal(event: SessionEvent) -> bool:
    return event.payload.get("event") in TERMINAL_EVENTS
