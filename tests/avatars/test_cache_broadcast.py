"""Warm and evict reach every generating worker: one message on each worker's own queue.

The messages go through the real Redis broker and are run here the way a worker runs them
(fetched from that worker's queue, decoded, the actor called); the engine is a stand-in that
records what it was asked. Two real worker processes, each with its own engine, are in
``tests/e2e/test_two_workers.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker

from avatars.services.avatar import avatar_dir
from avatars.services.cache import (
    WARM_REPLY_PREFIX,
    avatar_cache_clear,
    avatar_cache_warm,
    avatar_cache_warm_run,
    avatar_cache_warm_wait,
)
from musetalk_site.engine import engine_install
from musetalk_site.heartbeat import WorkerBeat, beat_delete, beat_write
from musetalk_site.placement import cache_worker_queues, worker_queue
from musetalk_site.redis_conn import redis_client
from tests.factories import AvatarFactory

pytestmark = pytest.mark.django_db
WORKERS = ("broadcast-a", "broadcast-b")


class RecordingEngine:
    """Stands in for the model: remembers what was warmed and evicted; fails when told."""

    def __init__(self) -> None:
        self.warmed: list[str] = []
        self.evicted: list[str] = []
        self.fail_with = ""

    def warm(self, folder: str) -> None:
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        self.warmed.append(folder)

    def evict(self, folder: Path) -> bool:
        self.evicted.append(str(folder))
        return True


@pytest.fixture
def engine() -> Iterator[RecordingEngine]:
    fake = RecordingEngine()
    engine_install(fake, {"loaded": True})  # type: ignore[arg-type]  (a stand-in engine)
    yield fake
    engine_install(None, {"error": "no engine in this test process"})


@pytest.fixture
def broker(redis_server: str) -> Iterator[RedisBroker]:
    broker = dramatiq.get_broker()
    assert isinstance(broker, RedisBroker)
    yield broker
    for worker_id in WORKERS:
        broker.flush(worker_queue(worker_id))


@pytest.fixture
def two_workers(broker: RedisBroker) -> Iterator[tuple[str, ...]]:
    """Two live generating workers, as their heartbeats say."""
    for worker_id in WORKERS:
        queues = ["default", "generate", "stream", worker_queue(worker_id)]
        beat = WorkerBeat(
            worker_id=worker_id,
            pid=1,
            hostname="broadcast-test",
            started_at=time.time(),
            beat_at=time.time(),
            engine={"loaded": True},
            queues=queues,
        )
        beat_write(redis_client(), beat, ttl_seconds=60)
    yield WORKERS
    for worker_id in WORKERS:
        beat_delete(redis_client(), worker_id)


@pytest.fixture
def avatar(settings: Any, tmp_path: Path) -> Any:
    settings.MEDIA_ROOT = str(tmp_path)
    avatar = AvatarFactory()
    avatar_dir(avatar).mkdir(parents=True)
    (avatar_dir(avatar) / "manifest.json").write_text("{}")
    return avatar


def _run_queued(broker: RedisBroker, worker_id: str) -> list[str]:
    """Run what waits on ``worker_id``'s own queue, as that worker would; the actor names."""
    consumer = broker.consume(worker_queue(worker_id), prefetch=10, timeout=100)
    ran = []
    for _ in range(5):
        message = next(consumer)
        if message is None:
            break
        broker.get_actor(message.actor_name).fn(*message.args)
        consumer.ack(message)
        ran.append(message.actor_name)
    consumer.close()
    return ran


def test_warming_sends_one_message_to_each_generating_worker_and_waits_for_all(
    broker: RedisBroker, two_workers: tuple[str, ...], avatar: Any, engine: RecordingEngine
):
    reply_key = avatar_cache_warm(avatar=avatar)
    assert reply_key.endswith(f":{len(cache_worker_queues())}")

    assert _run_queued(broker, "broadcast-a") == ["avatar_cache_warm"]
    assert engine.warmed == [str(avatar_dir(avatar))]
    if len(cache_worker_queues()) == 2:  # no live stack's worker shares this Redis now
        assert avatar_cache_warm_wait(reply_key=reply_key, timeout_seconds=1) is None
    assert _run_queued(broker, "broadcast-b") == ["avatar_cache_warm"]
    assert engine.warmed == [str(avatar_dir(avatar))] * 2


def test_the_wait_says_ready_once_every_expected_worker_answered(
    redis_server: str, engine: RecordingEngine
):
    reply_key = WARM_REPLY_PREFIX + "test-ready:2"
    avatar_cache_warm_run(folder="/a", reply_key=reply_key)
    assert avatar_cache_warm_wait(reply_key=reply_key, timeout_seconds=1) is None
    avatar_cache_warm_run(folder="/a", reply_key=reply_key)
    avatar_cache_warm_run(folder="/a", reply_key=reply_key)  # the one the first wait took
    outcome = avatar_cache_warm_wait(reply_key=reply_key, timeout_seconds=5)
    assert outcome is not None
    assert outcome["status"] == "ready"
    assert len(outcome["workers"]) == 2


def test_the_wait_says_failed_as_soon_as_one_worker_could_not_load_it(
    redis_server: str, engine: RecordingEngine
):
    reply_key = WARM_REPLY_PREFIX + "test-failed:3"
    engine.fail_with = "disk gone"
    avatar_cache_warm_run(folder="/a", reply_key=reply_key)
    outcome = avatar_cache_warm_wait(reply_key=reply_key, timeout_seconds=5)
    assert outcome is not None
    assert outcome["status"] == "failed" and outcome["error"] == "disk gone"


def test_evicting_reaches_every_generating_worker(
    broker: RedisBroker, two_workers: tuple[str, ...], avatar: Any, engine: RecordingEngine
):
    avatar_cache_clear(avatar=avatar)
    for worker_id in two_workers:
        assert _run_queued(broker, worker_id) == ["avatar_cache_evict"]
    assert engine.evicted == [str(avatar_dir(avatar))] * 2


def test_with_no_live_worker_a_warm_waits_in_the_shared_queue_for_one(
    broker: RedisBroker, avatar: Any
):
    if cache_worker_queues():
        pytest.skip("a live stack's worker shares this Redis")
    shared = f"{broker.namespace}:generate"
    before = broker.client.llen(shared)
    reply_key = avatar_cache_warm(avatar=avatar)
    try:
        assert reply_key.endswith(":1")
        assert broker.client.llen(shared) == before + 1
    finally:
        broker.flush("generate")
