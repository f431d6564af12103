"""``GET /capacity``: the workers' measured frames/s (from real heartbeats in the real Redis)
and how many more sessions fit; and the pure rules of musetalk_site/capacity.py."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from musetalk_site.capacity import (
    IDLE_RETRY_SECONDS,
    available_sessions,
    retry_after_seconds,
    session_fits,
    stream_fits,
    worker_capacity,
)
from musetalk_site.heartbeat import WorkerBeat, beat_write
from musetalk_site.redis_conn import redis_client
from sessions_app.models import StreamSession
from tests.factories import StreamSessionFactory, UserFactory

pytestmark = pytest.mark.django_db

LIVE_QUEUES = ["default", "generate", "stream"]


def capacity(frames_per_s: float, **fields: Any) -> dict[str, Any]:
    """A worker's published capacity as the engine's heartbeat carries it."""
    return {
        "measured": frames_per_s > 0,
        "device": "cpu",
        "frames_per_s": frames_per_s,
        "frames_per_s_by_batch": {"1": frames_per_s / 4, "8": frames_per_s},
        "max_batch": 8,
        "active_streams": 0,
        "pending_streams": 0,
        "active_jobs": 0,
        "live_frames_per_s": 0.0,
        "stream_seconds_left": 0.0,
        **fields,
    }


def beat(worker_id: str, published: dict | None, *, queues: list[str] = LIVE_QUEUES) -> None:
    """Write a live worker's heartbeat (engine loaded) into the test Redis."""
    engine: dict[str, Any] = {"loaded": True, "device": "cpu", "profile": "random-tiny"}
    if published is not None:
        engine["capacity"] = published
    now = time.time()
    record = WorkerBeat(
        worker_id=worker_id,
        pid=1,
        hostname="test",
        started_at=now - 60,
        beat_at=now,
        engine=engine,
        queues=queues,
    )
    beat_write(redis_client(), record, ttl_seconds=60)


@pytest.fixture(autouse=True)
def _admission_on(settings) -> None:
    settings.LIVE_ADMISSION = True  # the test environment turns it off for other tests


@pytest.fixture
def api(db) -> APIClient:
    client = APIClient()
    user = UserFactory(username="watcher")
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user
    return client


def test_it_reports_each_worker_and_the_total(api, redis_server, settings):
    settings.LIVE_CAPACITY_TARGET = 0.9
    beat("w-fast", capacity(100.0, active_streams=2, live_frames_per_s=40.0))
    beat("w-slow", capacity(60.0))
    beat("w-new", capacity(0.0))  # not calibrated yet
    beat("w-prepare", capacity(500.0), queues=["prepare"])  # takes no live utterances
    for _ in range(3):
        StreamSessionFactory(fps=25)
    StreamSessionFactory(fps=25, status=StreamSession.Status.ENDED)  # reserves nothing

    response = api.get("/capacity?fps=25")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["fps"] == 25 and body["target"] == 0.9 and body["admission"] is True
    workers = {item["worker_id"]: item for item in body["workers"]}
    assert set(workers) == {"w-fast", "w-slow", "w-new"}
    # Its own room: floor((100 * 0.9 - 40) / 25) = 2, beside the streams it makes now.
    assert workers["w-fast"]["available_sessions"] == 2
    assert workers["w-fast"]["frames_per_s_by_batch"] == {"1": 25.0, "8": 100.0}
    assert workers["w-slow"]["available_sessions"] == 2  # floor(54 / 25)
    assert workers["w-new"]["measured"] is False and workers["w-new"]["available_sessions"] is None
    # The total reserves every open session: floor((160 * 0.9 - 75) / 25) = 2.
    assert body["total"] == {
        "measured": True,
        "frames_per_s": 160.0,
        "reserved_frames_per_s": 75.0,
        "live_frames_per_s": 40.0,
        "active_streams": 2,
        "pending_streams": 0,
        "active_sessions": 3,
        "available_sessions": 2,
        "retry_after_seconds": IDLE_RETRY_SECONDS,
    }
    assert api.get("/capacity?fps=10").json()["total"]["available_sessions"] == 6


def test_the_default_fps_is_25(api, redis_server):
    beat("w1", capacity(50.0))
    body = api.get("/capacity").json()
    assert body["fps"] == 25 and body["total"]["available_sessions"] == 1


@pytest.mark.parametrize("fps", ["0", "61", "-3", "many"])
def test_a_bad_fps_is_refused_with_400(api, redis_server, fps):
    response = api.get(f"/capacity?fps={fps}")
    assert response.status_code == 400
    assert response.json()["message"].startswith("fps:")
    assert "fps" in response.json()["extra"]["fields"]


def test_it_needs_credentials(redis_server, db):
    response = APIClient().get("/capacity?fps=25")
    assert response.status_code == 401
    assert set(response.json()) == {"message", "extra"}


def test_unknown_capacity_says_so_and_names_no_room(api, redis_server):
    beat("old", None)  # a worker whose heartbeat carries no capacity
    body = api.get("/capacity?fps=25").json()
    assert body["workers"][0]["measured"] is False
    assert body["total"]["measured"] is False
    assert body["total"]["available_sessions"] is None
    assert body["total"]["frames_per_s"] == 0


def test_no_worker_at_all_is_unknown_capacity(api, redis_server):
    body = api.get("/capacity?fps=25").json()
    assert body["workers"] == [] and body["total"]["measured"] is False


def test_available_sessions_rounds_down_and_never_goes_negative():
    assert available_sessions(frames_per_s=100, target=0.9, reserved_frames_per_s=0, fps=25) == 3
    assert available_sessions(frames_per_s=100, target=1.0, reserved_frames_per_s=0, fps=25) == 4
    assert available_sessions(frames_per_s=100, target=0.9, reserved_frames_per_s=90, fps=25) == 0
    assert available_sessions(frames_per_s=10, target=0.9, reserved_frames_per_s=50, fps=25) == 0


def test_unknown_capacity_and_an_idle_platform_admit():
    unmeasured = [worker_capacity({"worker_id": "w", "engine": {"capacity": capacity(0.0)}})]
    slow = [worker_capacity({"worker_id": "w", "engine": {"capacity": capacity(10.0)}})]
    assert session_fits(unmeasured, target=0.9, reserved_frames_per_s=500, fps=25)
    assert session_fits([], target=0.9, reserved_frames_per_s=500, fps=25)
    assert session_fits(slow, target=0.9, reserved_frames_per_s=0, fps=25)  # nobody to slow
    assert not session_fits(slow, target=0.9, reserved_frames_per_s=25, fps=25)
    assert stream_fits(slow, target=0.9, demand_frames_per_s=0, fps=25)
    assert not stream_fits(slow, target=0.9, demand_frames_per_s=5, fps=25)


def test_a_malformed_capacity_counts_as_unmeasured():
    bad = {"measured": True, "frames_per_s": "fast", "active_streams": None}
    item = worker_capacity({"worker_id": "w", "engine": {"capacity": bad}})
    assert item.measured is False and item.frames_per_s == 0 and item.active_streams == 0


def test_retry_after_is_when_the_first_utterance_should_end():
    busy = worker_capacity(
        {"engine": {"capacity": capacity(50.0, active_streams=2, stream_seconds_left=7.0)}}
    )
    almost = worker_capacity(
        {"engine": {"capacity": capacity(50.0, active_streams=1, stream_seconds_left=0.2)}}
    )
    assert retry_after_seconds([busy]) == 4  # 3.5 s each on average, rounded up
    assert retry_after_seconds([busy, almost]) == 1  # never under a second
    assert retry_after_seconds([]) == IDLE_RETRY_SECONDS


def test_an_application_error_carries_its_headers_to_plain_views():
    from musetalk_site.errors import ApplicationError, error_response

    refused = ApplicationError("full", {"x": 1}, status=429, headers={"Retry-After": "7"})
    response = error_response(refused)
    assert response.status_code == 429 and response["Retry-After"] == "7"


def test_worker_processes_sharing_a_device_count_it_once() -> None:
    from musetalk_site.capacity import total_frames_per_s, worker_capacity

    def worker(worker_id: str, host: str, device_id: str, fps: float) -> dict:
        capacity = {"measured": True, "frames_per_s": fps, "device_id": device_id}
        return {"worker_id": worker_id, "hostname": host, "engine": {"capacity": capacity}}

    workers = [
        worker("a-1", "gpu-a", "GPU-1111", 500.0),  # two processes on one GPU
        worker("a-2", "gpu-a", "GPU-1111", 480.0),
        worker("a-3", "gpu-a", "GPU-2222", 450.0),  # the host's second GPU
        worker("b-1", "gpu-b", "GPU-1111", 400.0),  # another host (its own GPU)
    ]
    assert total_frames_per_s([worker_capacity(w) for w in workers]) == 500 + 450 + 400
    anonymous = [
        {"worker_id": f"x-{n}", "engine": {"capacity": {"measured": True, "frames_per_s": 10}}}
        for n in range(2)
    ]
    assert total_frames_per_s([worker_capacity(w) for w in anonymous]) == 20
