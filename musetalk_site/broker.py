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

A message sent to another queue than its actor's (a worker's own queue, see
:mod:`musetalk_site.placement`) is known by ``<queue>/<redis id>``: the id says where to look.
A worker queue is consumed by one process only, so a message waiting in the queue of a worker
whose heartbeat is gone will never run: it is lost too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from musetalk_site.placement import is_worker_queue, live_worker_queues

# KEYS[1]: the namespace; ARGV: queue name, redis message id, now (ms), heartbeat timeout (ms),
# 1 when nobody consumes the queue any more. Returns 1 when pending; drops the message and
# returns 0 when lost.
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
if ARGV[5] == "1" then
    redis.call("lrem", queue_key, 0, message_id)
elseif redis.call("lpos", queue_key, message_id) then
    return 1
end
redis.call("hdel", messages, message_id)
return 0
"""


class _Queued(Protocol):
    message_id: str


Row = TypeVar("Row", bound=_Queued)


def message_send(actor: dramatiq.Actor[..., Any], *args: Any, queue_name: str | None = None) -> str:
    """Send ``actor(*args)`` to its queue, or to ``queue_name``; returns the id
    :func:`message_pending` looks the message up by."""
    message = actor.message(*args)
    if queue_name and queue_name != actor.queue_name:
        message = message.copy(queue_name=queue_name)
    sent = actor.broker.enqueue(message)
    redis_id = str(sent.options.get("redis_message_id", sent.message_id))
    if sent.queue_name == actor.queue_name:
        return redis_id
    return f"{sent.queue_name}/{redis_id}"


def messages_lost(rows: Iterable[Row], *, queue_name: str) -> Iterator[Row]:
    """The queued rows (each with a ``message_id``) whose message the broker lost;
    ``queue_name`` is where a message whose id names no queue was sent."""
    live: set[str] | None = None
    for row in rows:
        queue, message_id = _split(row.message_id, queue_name)
        if is_worker_queue(queue) and live is None:
            live = live_worker_queues()
        abandoned = live is not None and is_worker_queue(queue) and queue not in live
        if not _pending(queue, message_id, abandoned=abandoned):
            yield row


def message_pending(*, queue_name: str, message_id: str) -> bool:
    """True while the message waits in its queue (``queue_name`` unless its id names one)
    or a live consumer holds it. A lost message (see the module docstring) is dropped from
    the broker and answers False."""
    queue, redis_id = _split(message_id, queue_name)
    abandoned = is_worker_queue(queue) and queue not in live_worker_queues()
    return _pending(queue, redis_id, abandoned=abandoned)


def _split(message_id: str, queue_name: str) -> tuple[str, str]:
    queue, _, redis_id = message_id.rpartition("/")
    return (queue or queue_name), redis_id


def _pending(queue_name: str, message_id: str, *, abandoned: bool) -> bool:
    broker = dramatiq.get_broker()
    if not isinstance(broker, RedisBroker):
        return True  # only the Redis broker can be asked: never touch what we cannot see
    if not message_id:
        return False
    script = broker.client.register_script(_PENDING_OR_DROP)
    args = [queue_name, message_id, current_millis(), broker.heartbeat_timeout, int(abandoned)]
    return bool(script(keys=[broker.namespace], args=args))


# -- the doorbell: a waiting consumer wakes the moment work arrives --------------------------

DOORBELL_TOKENS = 64  # rings kept per queue at most (each wakes one waiting consumer)


class DoorbellRedisBroker(RedisBroker):
    """Dramatiq's Redis broker whose idle consumers wait on a doorbell instead of sleeping.

    An idle Dramatiq consumer sleeps between fetches (a backoff up to the worker timeout), so
    work sent meanwhile waits for the sleep to end: tens of milliseconds before a live
    utterance even starts. Here every message sent without a delay also rings its queue's
    doorbell (a Redis list, one token per message, at most ``DOORBELL_TOKENS``), and an idle
    consumer blocks on that list (``BLPOP``) for as long as it would have slept: it fetches
    as soon as a message arrives. A ring is only a hint (the message itself is fetched as
    before), so a stale token costs one empty fetch and a lost one the old sleep.
    """

    def doorbell_key(self, queue_name: str) -> str:
        return f"{self.namespace}:__doorbell__.{queue_name}"

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _DoorbellConsumer

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        sent = super().enqueue(message, delay=delay)
        if delay is None:
            key = self.doorbell_key(sent.queue_name)
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, DOORBELL_TOKENS - 1)
            pipe.expire(key, 3600)
            pipe.execute()
        return sent

    def doorbell_wait(self, queue_name: str, seconds: float) -> None:
        """Block until the queue's doorbell rings or ``seconds`` pass."""
        self.client.blpop([self.doorbell_key(queue_name)], timeout=max(0.001, seconds))


class _DoorbellConsumer(_RedisConsumer):
    """A Redis consumer that waits on its queue's doorbell when there is nothing to fetch."""

    broker: DoorbellRedisBroker

    def __next__(self) -> MessageProxy | None:
        try:
            room = self.outstanding_message_count < self.prefetch
            if not self.message_cache and room:
                wanted = self.prefetch - self.outstanding_message_count
                self.message_cache = self.broker.do_fetch(self.queue_name, wanted)
            while self.message_cache:
                data = self.message_cache.pop(0)
                if data is None:
                    continue
                self.misses = 0
                message = Message.decode(data)
                self.queued_message_ids.add(message.message_id)
                return MessageProxy(message)
            self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            if room:
                self.broker.doorbell_wait(self.queue_name, backoff_ms / 1000)
            else:  # it could not fetch a message now: leave the ring to a consumer that can
                time.sleep(backoff_ms / 1000)
            return None
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None
