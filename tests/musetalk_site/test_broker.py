"""``message_pending`` asks the real Redis broker where a message is, the way Dramatiq keeps it.

The messages go to a queue of this module's own, so no worker of a live stack takes them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.message import Message

from musetalk_site.broker import (
    DOORBELL_TOKENS,
    DoorbellRedisBroker,
    message_pending,
    message_send,
)

QUEUE = "test_broker_probe"


def _probe(number: int) -> None:
    """Never runs: nothing consumes QUEUE."""


@pytest.fixture
def broker(redis_server: str) -> Iterator[RedisBroker]:
    broker = dramatiq.get_broker()
    assert isinstance(broker, RedisBroker)
    yield broker
    broker.flush(QUEUE)


@pytest.fixture(scope="module")
def probe() -> Iterator[dramatiq.Actor]:
    actor = dramatiq.actor(_probe, queue_name=QUEUE, actor_name="test_broker_probe")
    yield actor
    del actor.broker.actors[actor.actor_name]


@pytest.fixture
def other_worker(broker: RedisBroker) -> Iterator[RedisBroker]:
    """A second broker connection, as a worker process has: its own consumer id."""
    other = RedisBroker(client=broker.client, namespace=broker.namespace)
    yield other
    broker.client.delete(_acks_key(broker, other))
    broker.client.zrem(_heartbeats_key(broker), other.broker_id)


def _key(broker: RedisBroker, suffix: str = "") -> str:
    return f"{broker.namespace}:{QUEUE}{suffix}"


def _acks_key(broker: RedisBroker, consumer: RedisBroker) -> str:
    return f"{broker.namespace}:__acks__.{consumer.broker_id}.{QUEUE}"


def _heartbeats_key(broker: RedisBroker) -> str:
    return f"{broker.namespace}:__heartbeats__"


def _lose(client: redis.Redis, broker: RedisBroker, message_id: str) -> None:
    """What Redis losing a waiting message leaves: its id and data are gone."""
    client.lrem(_key(broker), 0, message_id)
    client.hdel(_key(broker, ".msgs"), message_id)


def _fetch(worker: RedisBroker) -> tuple[dramatiq.Consumer, dramatiq.MessageProxy]:
    """Fetch the next message as a worker does (it stays unacked until the actor ran)."""
    consumer = worker.consume(QUEUE, prefetch=1, timeout=100)
    for _ in range(20):
        message = next(consumer)
        if message is not None:
            return consumer, message
    raise AssertionError("nothing to fetch")


def test_a_sent_message_is_pending_under_the_id_message_send_returns(
    broker: RedisBroker, probe: dramatiq.Actor
) -> None:
    message_id = message_send(probe, 1)
    assert broker.client.hexists(_key(broker, ".msgs"), message_id)
    assert message_pending(queue_name=QUEUE, message_id=message_id)


def test_a_message_waiting_behind_a_long_queue_is_pending_and_kept(
    broker: RedisBroker, probe: dramatiq.Actor
) -> None:
    ids = [message_send(probe, n) for n in range(200)]
    assert message_pending(queue_name=QUEUE, message_id=ids[-1])
    assert message_pending(queue_name=QUEUE, message_id=ids[0])
    assert broker.client.lrange(_key(broker), 0, -1) == [i.encode() for i in ids]


def test_a_message_redis_lost_is_not_pending(broker: RedisBroker, probe: dramatiq.Actor) -> None:
    kept, lost = message_send(probe, 1), message_send(probe, 2)
    _lose(broker.client, broker, lost)
    assert not message_pending(queue_name=QUEUE, message_id=lost)
    assert message_pending(queue_name=QUEUE, message_id=kept)


def test_a_message_a_live_worker_fetched_is_pending(
    broker: RedisBroker, probe: dramatiq.Actor, other_worker: RedisBroker
) -> None:
    message_id = message_send(probe, 1)
    _fetch(other_worker)
    assert broker.client.sismember(_acks_key(broker, other_worker), message_id)
    assert message_pending(queue_name=QUEUE, message_id=message_id)


def test_a_message_a_dead_worker_fetched_is_lost_and_dropped_for_good(
    broker: RedisBroker, probe: dramatiq.Actor, other_worker: RedisBroker
) -> None:
    message_id = message_send(probe, 1)
    _fetch(other_worker)
    silent_since = current_millis() - broker.heartbeat_timeout - 1000
    broker.client.zadd(_heartbeats_key(broker), {other_worker.broker_id: silent_since})

    assert not message_pending(queue_name=QUEUE, message_id=message_id)

    # Dramatiq's own maintenance cannot hand it back later, next to a re-sent copy.
    assert not broker.client.sismember(_acks_key(broker, other_worker), message_id)
    assert not broker.client.hexists(_key(broker, ".msgs"), message_id)


def test_a_dead_lettered_message_is_not_pending(
    broker: RedisBroker, probe: dramatiq.Actor, other_worker: RedisBroker
) -> None:
    message_id = message_send(probe, 1)
    consumer, message = _fetch(other_worker)
    consumer.nack(message)
    assert broker.client.zscore(_key(broker, ".XQ"), message_id) is not None
    assert not message_pending(queue_name=QUEUE, message_id=message_id)


def test_a_delayed_message_is_pending(broker: RedisBroker) -> None:
    message = broker.enqueue(Message(QUEUE, "test_broker_probe", (1,), {}, {}), delay=60_000)
    assert message_pending(queue_name=QUEUE, message_id=message.options["redis_message_id"])


def test_work_with_no_recorded_message_is_not_pending(broker: RedisBroker) -> None:
    assert not message_pending(queue_name=QUEUE, message_id="")


# -- the doorbell --------------------------------------------------------------------------


def test_the_platform_broker_rings_a_queue_doorbell_for_each_message_sent_without_delay(
    broker: RedisBroker, probe: dramatiq.Actor
) -> None:
    assert isinstance(broker, DoorbellRedisBroker)
    key = broker.doorbell_key(QUEUE)
    broker.client.delete(key)
    message_send(probe, 1)
    message_send(probe, 2)
    assert broker.client.llen(key) == 2
    broker.enqueue(probe.message(3), delay=60_000)  # a delayed message rings nothing yet
    assert broker.client.llen(key) == 2
    for number in range(DOORBELL_TOKENS + 10):
        message_send(probe, number)
    assert broker.client.llen(key) == DOORBELL_TOKENS  # bounded: rings are hints
    assert 0 < broker.client.ttl(key) <= 3600
    broker.client.delete(key)
    broker.flush(QUEUE)
    broker.flush(f"{QUEUE}.DQ")


def test_an_idle_consumer_wakes_when_a_message_arrives_instead_of_sleeping_its_backoff(
    broker: RedisBroker, probe: dramatiq.Actor
) -> None:
    """With a 10-s idle timeout, a consumer that has missed many times waits 5-10 s between
    fetches; the doorbell wakes it as soon as a message is sent, and it fetches it."""
    assert isinstance(broker, DoorbellRedisBroker)
    broker.client.delete(broker.doorbell_key(QUEUE))
    consumer = broker.consume(QUEUE, prefetch=1, timeout=10_000)
    consumer.misses = 30  # long idle: the backoff is at its ceiling
    sender = threading.Timer(0.3, message_send, args=(probe, 7))
    sender.start()
    started = time.monotonic()
    try:
        assert next(consumer) is None  # it waited, and woke up
        waited = time.monotonic() - started
        message = next(consumer)
    finally:
        sender.join()
    assert message is not None and message.args == (7,)
    assert waited < 5.0, f"the consumer slept {waited:.1f} s through the doorbell"
    consumer.ack(message)
    assert broker.client.llen(broker.doorbell_key(QUEUE)) == 0


def test_a_stale_ring_costs_one_empty_fetch(broker: RedisBroker) -> None:
    assert isinstance(broker, DoorbellRedisBroker)
    key = broker.doorbell_key(QUEUE)
    broker.client.delete(key)
    broker.client.lpush(key, 1)  # rung, but the message went to another consumer
    consumer = broker.consume(QUEUE, prefetch=1, timeout=100)
    assert next(consumer) is None
    assert broker.client.llen(key) == 0
    assert next(consumer) is None  # and then it waits its backoff as before


def test_a_consumer_with_no_room_to_fetch_leaves_the_ring_to_one_that_has(
    broker: RedisBroker, probe: dramatiq.Actor
) -> None:
    """A consumer holding as many messages as it may prefetch cannot take new work: it waits
    its backoff without taking the ring, which wakes a consumer that can."""
    assert isinstance(broker, DoorbellRedisBroker)
    key = broker.doorbell_key(QUEUE)
    broker.client.delete(key)
    busy = broker.consume(QUEUE, prefetch=1, timeout=100)
    message_send(probe, 1)
    held = next(busy)  # its one message, not acked yet
    assert held is not None and broker.client.llen(key) == 1  # its ring is still there
    broker.client.delete(key)
    message_send(probe, 2)
    assert next(busy) is None
    assert broker.client.llen(key) == 1  # left for another consumer
    idle = broker.consume(QUEUE, prefetch=1, timeout=100)
    taken = next(idle)
    assert taken is not None and taken.args == (2,)
    busy.ack(held)
    idle.ack(taken)
    broker.client.delete(key)
