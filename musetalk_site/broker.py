"""Is a sent message still in the broker? The question the reapers of queued work ask.

Dramatiq's Redis broker (``dramatiq/brokers/redis/dispatch.lua``) keeps a message's data in
the hash ``<namespace>:<queue>.msgs`` (redis message id -> data) from enqueue until it is
acked or dead-lettered. Meanwhile its id waits in the list ``<namespace>:<queue>``, or sits
in the set ``<namespace>:__acks__.<consumer>.<queue>`` once a consumer fetched it (prefetched
or running); ``<namespace>:__heartbeats__`` scores each consumer by the time of its last
command, and a live consumer polls at least every second.

A message is *pending* while it waits in its queue (or the delay queue) or is held by a
consumer whose heartbeat is fresh (the broker's ``heartbeat_timeout``, 60 s by default):
work waiting behind a long queue is never touched. Otherwise it is *lost*: acked or
dead-lettered without running, gone with Redis' data, or held by a consumer that died,
which Dramatiq hands back only at random (in 0.1 % of its commands). A lost message is
dropped from the broker in the same atomic step, so it cannot come back next to the copy
the caller re-sends; if a copy ran anyway, the actors claim their rows with conditional
updates and it would find nothing to do.

Our actors are never delayed or retried (``max_retries=0``), so a message keeps the redis id
:func:`message_send` returns for as long as it lives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

# KEYS[1]: the namespace; ARGV: queue name, redis message id, now (ms), heartbeat timeout (ms).
# Returns 1 when pending; drops the message and returns 0 when lost.
_PENDING_OR_DROP = """
local namespace, queue, message_id = KEYS[1], ARGV[1], ARGV[2]
local fresh_since = tonumber(ARGV[3]) - tonumber(ARGV[4])
local queue_key = namespace .. ":" .. queue
local messages = queue_key .. ".msgs"
if redis.call("hexists", queue_key .. ".DQ.msgs", message_id) == 1 then
    return 1
end
if redis.call("hexists", messages, message_id) == 0 then
    return 0
end
local beats = redis.call("zrange", namespace .. ":__heartbeats__", 0, -1, "WITHSCORES")
for i = 1, #beats, 2 do
    local acks = namespace .. ":__acks__." .. beats[i] .. "." .. queue
    if redis.call("sismember", acks, message_id) == 1 then
        if tonumber(beats[i + 1]) >= fresh_since then
            return 1
        end
        redis.call("srem", acks, message_id)
        redis.call("hdel", messages, message_id)
        return 0
    end
end
if redis.call("lpos", queue_key, message_id) then
    return 1
end
redis.call("hdel", messages, message_id)
return 0
"""


class _Queued(Protocol):
    message_id: str


Row = TypeVar("Row", bound=_Queued)


def message_send(actor: dramatiq.Actor[..., Any], *args: Any) -> str:
    """Send ``actor(*args)``; returns the id :func:`message_pending` looks the message up by."""
    message = actor.send(*args)
    return str(message.options.get("redis_message_id", message.message_id))


def messages_lost(rows: Iterable[Row], *, queue_name: str) -> Iterator[Row]:
    """The queued rows (each with a ``message_id``) whose message the broker lost."""
    for row in rows:
        if not message_pending(queue_name=queue_name, message_id=row.message_id):
            yield row


def message_pending(*, queue_name: str, message_id: str) -> bool:
    """True while the message waits in ``queue_name`` or a live consumer holds it. A lost
    message (see the module docstring) is dropped from the broker and answers False."""
    broker = dramatiq.get_broker()
    if not isinstance(broker, RedisBroker):
        return True  # only the Redis broker can be asked: never touch what we cannot see
    if not message_id:
        return False
    script = broker.client.register_script(_PENDING_OR_DROP)
    args = [queue_name, message_id, current_millis(), broker.heartbeat_timeout]
    return bool(script(keys=[broker.namespace], args=args))
