"""A worker's heartbeat says how many messages it is processing, by queue (for the seed
API's ``active_requests``)."""

from __future__ import annotations

import threading
import time

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from musetalk_site.heartbeat import beats_read
from musetalk_site.redis_conn import redis_client
from musetalk_site.worker import HeartbeatMiddleware


def _wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met")


def _published_running() -> dict[str, int] | None:
    beats = beats_read(redis_client())
    return beats[0].running if beats else None


def test_the_heartbeat_publishes_the_messages_being_processed(redis_server):
    heartbeat = HeartbeatMiddleware()
    broker = StubBroker(middleware=[heartbeat])
    broker.emit_after("process_boot")
    started, release = threading.Event(), threading.Event()

    @dramatiq.actor(broker=broker, queue_name="generate")
    def busy() -> None:
        started.set()
        release.wait(30)

    @dramatiq.actor(broker=broker, queue_name="generate")
    def broken() -> None:
        raise RuntimeError("fails")

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        busy.send()
        assert started.wait(30)
        assert heartbeat.running() == {"generate": 1}
        _wait_for(lambda: _published_running() == {"generate": 1})
        broken.send()
        release.set()
        broker.join("generate", fail_fast=False)
        worker.join()
        assert heartbeat.running() == {}  # a failed message is no longer running either
        _wait_for(lambda: _published_running() == {})
    finally:
        release.set()
        worker.stop()


@pytest.mark.parametrize("hook", ["after_process_message", "after_skip_message"])
def test_a_message_it_never_saw_start_is_not_taken_off(hook):
    heartbeat = HeartbeatMiddleware()
    seen = dramatiq.Message(queue_name="stream", actor_name="a", args=(), kwargs={}, options={})
    unseen = dramatiq.Message(queue_name="stream", actor_name="a", args=(), kwargs={}, options={})
    heartbeat.before_process_message(None, seen)
    getattr(heartbeat, hook)(None, unseen)
    assert heartbeat.running() == {"stream": 1}
    getattr(heartbeat, hook)(None, seen)
    assert heartbeat.running() == {}
