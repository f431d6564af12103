"""Two generating worker processes on one Redis and one database (``WORKER_PROCESSES=2``, as
the launcher runs them), beside the preparation worker and daphne.

A warm reaches both engines' caches and an evict empties both; an utterance streams to the
end on one of them; a worker killed mid-utterance ends it with an error event, sent by a
surviving worker's maintenance once the dead one's heartbeat is ``WORKER_STALE_SECONDS`` old
(the suite runs with 8 s, and maintenance every 5 s). Models are the random ``random-tiny``
profile. The time from the kill to the error event is printed (``pytest -s``), not asserted.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from musetalk_site.heartbeat import beats_read
from musetalk_site.placement import worker_queue
from musetalk_site.stack import Stack, StackConfig, free_port
from sessions_app.models import StreamRequest
from sessions_app.services.stream import WORKER_LOST
from tests.conftest import database_url, live_stack_workers_paused
from tests.e2e.client import ApiClient, ready_avatar_user, sse_payloads, wait_for
from tests.media import make_face_video, make_speech_wav

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# The death of a worker is noticed by the others' maintenance: its heartbeat goes stale after
# WORKER_STALE_SECONDS, the next maintenance run (every WORKER_MAINTENANCE_SECONDS) fails the
# utterance. The rest is slack for a loaded two-core machine.
REAP_BOUND = settings.WORKER_STALE_SECONDS + settings.WORKER_MAINTENANCE_SECONDS + 60
WORK_BOUND = 240


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: object
) -> Iterator[Stack]:
    from django.db import connection

    var = tmp_path_factory.mktemp("two-workers")
    env = {
        "DATABASE_URL": database_url(connection.settings_dict),
        "VAR_DIR": str(var),
        "MEDIA_ROOT": str(var / "media"),
    }
    config = StackConfig(
        port=free_port(),
        var_dir=var,
        env=env,
        log_dir=var / "logs",
        worker_processes=2,
        worker_threads=2,
        worker_shutdown_seconds=10,
    )
    stack = Stack(config)
    with live_stack_workers_paused():
        try:
            stack.start(health_timeout=240)
            yield stack
        finally:
            stack.stop()


def _generating_workers(stack: Stack) -> list[str]:
    """The ids of the live generating workers with a loaded engine and a queue of their own."""
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    return sorted(
        beat.worker_id
        for beat in beats_read(client)
        if beat.age() <= settings.WORKER_STALE_SECONDS
        and beat.engine.get("loaded")
        and worker_queue(beat.worker_id) in beat.queues
    )


def _cached_on(client: ApiClient, workers: list[str]) -> set[str]:
    status = client.get("/avatars/host/cache/status").json()
    return {w["worker_id"] for w in status["workers"] if w["cached"] and w["worker_id"] in workers}


class Feed:
    """Every event of a session's SSE feed, read in a thread."""

    def __init__(self, client: ApiClient, session_id: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._response = client.session.get(
            client.url(f"/sessions/{session_id}/events"), stream=True, timeout=(10, 300)
        )
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for _, payload in sse_payloads(self._response):
                self.events.append(payload)
        except Exception:  # noqa: S110 - close() cut the response under the reading thread
            pass

    def of(self, request_id: str, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("request_id") == request_id and e["event"] == name]

    def close(self) -> None:
        self._response.close()


def _stream(client: ApiClient, session_id: str, audio: Path) -> str:
    with audio.open("rb") as handle:
        response = client.post(
            f"/sessions/{session_id}/stream",
            data={"batch_size": 2},
            files={"audio_file": (audio.name, handle, "audio/wav")},
        )
    assert response.status_code == 200, response.text
    return str(response.json()["request_id"])


def test_two_workers_share_the_cache_commands_and_a_dead_one_ends_its_stream(
    stack: Stack, tmp_path: Path
):
    wait_for(lambda: len(_generating_workers(stack)) == 2, timeout=WORK_BOUND)
    workers = _generating_workers(stack)
    video = make_face_video(tmp_path / "face.mp4", seconds=0.6, fps=25, size=(256, 320))
    client = ready_avatar_user(stack.base_url, video, "two-workers")

    # 0. Both engines measured their frames/s at boot and publish it; sharing this host's CPU,
    # they count once in the total.
    capacity = client.get("/capacity?fps=25").json()
    measured = {w["worker_id"]: w for w in capacity["workers"] if w["measured"]}
    assert set(workers) <= set(measured), capacity
    assert all(measured[w]["frames_per_s"] > 0 for w in workers)
    assert capacity["total"]["measured"] is True
    assert len({measured[w]["device_key"] for w in workers}) == 1
    assert capacity["total"]["frames_per_s"] == pytest.approx(
        max(measured[w]["frames_per_s"] for w in workers), abs=0.02
    )

    # 1. A warm reaches both engines (each heartbeat lists the avatar); an evict empties both.
    warmed = client.post("/avatars/host/cache/warm?wait=true&timeout_seconds=60")
    assert warmed.status_code == 200, warmed.text
    wait_for(lambda: _cached_on(client, workers) == set(workers), timeout=30)
    assert client.delete("/avatars/host/cache").status_code == 200
    wait_for(lambda: _cached_on(client, workers) == set(), timeout=30)
    assert client.post("/avatars/host/cache/warm?wait=true&timeout_seconds=60").status_code == 200

    # 2. An utterance streams to the end on one of them.
    session = client.post("/sessions/create?avatar_id=host&chunk_duration=0.4")
    assert session.status_code in (200, 201), session.text
    session_id = str(session.json()["session_id"])
    feed = Feed(client, session_id)
    first = _stream(client, session_id, make_speech_wav(tmp_path / "short.wav", seconds=1.2))
    wait_for(lambda: feed.of(first, "speaking_ended"), timeout=WORK_BOUND)
    assert feed.of(first, "complete"), feed.events[-5:]
    assert StreamRequest.objects.get(request_id=first).worker_id in workers

    # 3. The worker streaming the next one is killed: the utterance ends with an error event.
    second = _stream(client, session_id, make_speech_wav(tmp_path / "long.wav", seconds=8.0))
    wait_for(lambda: len(feed.of(second, "chunk")) >= 2, timeout=WORK_BOUND)
    row = StreamRequest.objects.get(request_id=second)
    assert row.worker_id in workers
    killed_at = time.monotonic()
    os.kill(int(row.worker_id.rsplit("-", 1)[1]), signal.SIGKILL)
    wait_for(lambda: feed.of(second, "speaking_ended"), timeout=REAP_BOUND)
    told = time.monotonic() - killed_at
    feed.close()
    errors = feed.of(second, "error")
    assert [e["message"] for e in errors] == [WORKER_LOST], feed.of(second, "speaking_ended")
    assert StreamRequest.objects.get(request_id=second).status == StreamRequest.Status.FAILED
    print(  # noqa: T201 - the measurement, shown with pytest -s
        f"\nworker killed mid-utterance -> error event after {told:.1f} s "
        f"(WORKER_STALE_SECONDS={settings.WORKER_STALE_SECONDS:g}, "
        f"WORKER_MAINTENANCE_SECONDS={settings.WORKER_MAINTENANCE_SECONDS:g})"
    )

    # 4. Each utterance was placed on a worker's own queue (its message id names the queue),
    # and that worker streamed it.
    for request_id in (first, second):
        placed = StreamRequest.objects.get(request_id=request_id)
        assert placed.message_id.split("/")[0] == worker_queue(placed.worker_id), placed.message_id
