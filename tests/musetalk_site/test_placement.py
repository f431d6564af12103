"""Placement of live utterances on workers, and messages on a worker's own queue.

Heartbeats are written to the real Redis the way workers write them; messages go through the
real Redis broker. The worker ids are this module's own, so no live stack's worker is chosen.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker

from musetalk_site.broker import message_pending, message_send, messages_lost
from musetalk_site.heartbeat import WorkerBeat, beat_delete, beat_write
from musetalk_site.placement import (
    cache_worker_queues,
    live_worker_queues,
    stream_queue,
    stream_worker_choose,
    worker_queue,
)
from musetalk_site.redis_conn import redis_client

FOLDER = "/media/avatars/1/host"
TARGET = 0.9


def _engine(*, fps: float = 0.0, live: float = 0.0, cached: tuple[str, ...] = ()) -> dict:
    return {
        "loaded": True,
        "capacity": {"measured": fps > 0, "frames_per_s": fps, "live_frames_per_s": live},
        "cache": {"entries": {folder: {"bytes": 1} for folder in cached}},
    }


def _worker(worker_id: str, engine: dict, queues: list[str] | None = None) -> dict[str, Any]:
    own = ["default", "generate", "stream", worker_queue(worker_id)]
    return {"worker_id": worker_id, "queues": own if queues is None else queues, "engine": engine}


def _choose(*workers: dict[str, Any], fps: int = 25) -> str | None:
    return stream_worker_choose(workers, folder=FOLDER, fps=fps, target=TARGET)


# -- the rules (pure) ---------------------------------------------------------------------------


def test_a_worker_whose_cache_holds_the_avatar_wins_when_it_has_room():
    cold = _worker("cold", _engine(fps=500))
    warm = _worker("warm", _engine(fps=100, live=50, cached=(FOLDER,)))
    assert _choose(cold, warm) == "warm"


def test_without_a_warm_worker_the_one_with_most_free_frames_wins():
    busy = _worker("busy", _engine(fps=500, live=400))
    idle = _worker("idle", _engine(fps=200))
    assert _choose(busy, idle) == "idle"


def test_a_warm_worker_without_room_loses_to_a_cold_one_with_room():
    full = _worker("full", _engine(fps=100, live=80, cached=(FOLDER,)))
    cold = _worker("cold", _engine(fps=100))
    assert _choose(full, cold) == "cold"


def test_when_every_measured_worker_is_full_the_least_loaded_takes_it():
    full = _worker("full", _engine(fps=100, live=80, cached=(FOLDER,)))
    fuller = _worker("fuller", _engine(fps=100, live=90))
    assert _choose(full, fuller) == "full"
    assert _choose(_worker("over", _engine(fps=10, live=30)), fuller) == "fuller"


def test_on_a_tie_of_full_workers_the_warm_one_takes_it():
    cold = _worker("a-cold", _engine(fps=10))
    warm = _worker("b-warm", _engine(fps=10, cached=(FOLDER,)))
    assert _choose(warm, cold) == "b-warm"
    assert _choose(_worker("z-cold", _engine(fps=10)), warm) == "b-warm"


def test_with_no_candidate_it_goes_to_the_shared_queue():
    assert _choose() is None
    assert _choose(_worker("prep", _engine(fps=900), queues=["prepare"])) is None


def test_unknown_capacity_places_on_a_warm_worker_or_nowhere():
    cold = _worker("cold", _engine())
    warm = _worker("warm", _engine(cached=(FOLDER,)))
    assert _choose(cold, warm) == "warm"
    assert _choose(cold) is None


def test_only_workers_that_stream_and_consume_their_own_queue_are_candidates():
    preparer = _worker("prep", _engine(fps=900), queues=["prepare", worker_queue("prep")])
    old = _worker("old", _engine(fps=900), queues=["default", "generate", "stream"])
    every = _worker("every", _engine(fps=100), queues=["*"])
    assert _choose(preparer, old) is None
    assert _choose(preparer, old, every) == "every"


def test_a_worker_queue_name_is_short_and_its_own():
    assert worker_queue("host-1") != worker_queue("host-2")
    assert len(worker_queue("a-very-long-hostname.example.internal-4194304")) == 19


# -- from the heartbeats in Redis ---------------------------------------------------------------


@pytest.fixture
def beats(redis_server: str) -> Iterator[list[str]]:
    written: list[str] = []
    yield written
    for worker_id in written:
        beat_delete(redis_client(), worker_id)


def _beat(written: list[str], worker_id: str, engine: dict, *, age: float = 0.0, **kw: Any) -> None:
    detail = _worker(worker_id, engine, kw.get("queues"))
    beat = WorkerBeat(
        worker_id=worker_id,
        pid=1,
        hostname="placement-test",
        started_at=time.time() - 100,
        beat_at=time.time() - age,
        engine=engine,
        queues=detail["queues"],
    )
    beat_write(redis_client(), beat, ttl_seconds=60)
    written.append(worker_id)


def test_stream_queue_is_the_own_queue_of_the_worker_the_heartbeats_point_to(beats: list[str]):
    # Far more than a live stack's worker (its heartbeat may be in this Redis) could have.
    _beat(beats, "placement-cold", _engine(fps=1e9))
    _beat(beats, "placement-warm", _engine(fps=100, cached=(FOLDER,)))
    _beat(beats, "placement-stale", _engine(fps=900, cached=(FOLDER,)), age=1000)
    assert stream_queue(folder=FOLDER, fps=25) == worker_queue("placement-warm")
    assert stream_queue(folder="/media/avatars/1/other", fps=25) == worker_queue("placement-cold")


def test_cache_commands_go_to_every_live_generating_worker(beats: list[str]):
    _beat(beats, "placement-a", _engine(fps=100))
    _beat(beats, "placement-b", _engine())
    _beat(beats, "placement-prep", _engine(), queues=["prepare"])
    _beat(beats, "placement-gone", _engine(), age=1000)
    _beat(beats, "placement-loading", {"loaded": False})
    queues = cache_worker_queues()  # a live stack's workers may be among them
    assert {worker_queue("placement-a"), worker_queue("placement-b")} <= set(queues)
    for absent in ("placement-prep", "placement-gone", "placement-loading"):
        assert worker_queue(absent) not in queues
    live = live_worker_queues()
    assert worker_queue("placement-loading") in live
    assert worker_queue("placement-gone") not in live


# -- messages on a worker's own queue -----------------------------------------------------------


def _probe(number: int) -> None:
    """Never runs: no worker consumes the queues this module sends to."""


@pytest.fixture(scope="module")
def probe() -> Iterator[dramatiq.Actor]:
    actor = dramatiq.actor(_probe, queue_name="test_placement_probe", actor_name="placement_probe")
    yield actor
    del actor.broker.actors[actor.actor_name]


@dataclass
class Row:
    message_id: str


@pytest.fixture
def broker(redis_server: str) -> Iterator[RedisBroker]:
    broker = dramatiq.get_broker()
    assert isinstance(broker, RedisBroker)
    yield broker
    for worker_id in ("placement-alive", "placement-dead"):
        broker.flush(worker_queue(worker_id))
    broker.flush("test_placement_probe")


def test_a_message_sent_to_a_worker_queue_lands_there_and_its_id_names_the_queue(
    broker: RedisBroker, probe: dramatiq.Actor, beats: list[str]
):
    _beat(beats, "placement-alive", _engine())
    queue = worker_queue("placement-alive")
    message_id = message_send(probe, 7, queue_name=queue)
    assert message_id.startswith(queue + "/")
    assert len(message_id) <= 64  # fits the rows' message_id column
    assert broker.client.llen(f"{broker.namespace}:{queue}") == 1
    assert message_pending(queue_name=probe.queue_name, message_id=message_id)
    plain = message_send(probe, 8)
    assert "/" not in plain  # the actor's own queue: the redis id alone, as before


def test_a_message_waiting_for_a_dead_worker_is_lost_and_dropped(
    broker: RedisBroker, probe: dramatiq.Actor, beats: list[str]
):
    _beat(beats, "placement-alive", _engine())
    _beat(beats, "placement-dead", _engine(), age=1000)
    kept = Row(message_send(probe, 1, queue_name=worker_queue("placement-alive")))
    lost = Row(message_send(probe, 2, queue_name=worker_queue("placement-dead")))
    assert list(messages_lost([kept, lost], queue_name=probe.queue_name)) == [lost]
    dead_queue = f"{broker.namespace}:{worker_queue('placement-dead')}"
    assert broker.client.llen(dead_queue) == 0
    assert broker.client.hlen(dead_queue + ".msgs") == 0
