"""Faults on the real stack: nothing stuck, nothing lost, no manual step afterwards.

The cases run on a stack of this module's own (its own var dir, embedded Redis and port, on
the test database), kept up by the launcher's :class:`Supervisor` as ``bin/run`` keeps it up:
a child that dies is reaped and started again (here after 4 s rather than 1 s, see
``RESTART_POLICY``). Nothing else restarts anything.

1. The worker process preparing an avatar is killed (SIGKILL) mid-preparation.
2. The worker process streaming an utterance is killed while a player follows the session.
3. The embedded redis-server is killed mid-utterance; the supervisor starts it again from its
   data dir (append-only file).
4. The whole stack is stopped and started again on the same var dir and database while a
   session is open and one of its utterances is streaming.

(A worker killed mid-video is in ``test_avatar_flow.py``.) Each time: no row is left queued,
preparing, running or streaming; the client gets an error event or the rest of its work; no
event a player already had is lost or repeated, and ids only go up; and the platform works
again on its own. The recovery times are printed (``pytest -s``), and written as JSON to the
file ``FAULTS_RESULTS`` names (``bench/results/faults.json`` holds a run's); only bounded waits
are asserted, never how fast.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

from avatars.models import Avatar, GenerationJob
from avatars.services.avatar import WORKER_LOST as PREPARE_WORKER_LOST
from musetalk_site.launcher import GaveUp, RestartPolicy, Supervisor
from musetalk_site.sse import KEEPALIVE_SECONDS
from musetalk_site.stack import BASE_DIR, Stack, StackConfig, free_port
from sessions_app.models import StreamRequest
from sessions_app.services.stream import WORKER_LOST as STREAM_WORKER_LOST
from tests.conftest import database_url, live_stack_workers_paused
from tests.e2e.client import ApiClient, SseFollower, api_user, sse_payloads, wait_for
from tests.media import make_face_video, make_speech_wav

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# Where to record the recovery times: FAULTS_RESULTS=bench/results/faults.json bin/test -s ...
RESULTS = os.environ.get("FAULTS_RESULTS", "")
CHUNK_SECONDS = 0.4
# A killed worker's claim is reaped once it is WORKER_STALE_SECONDS old, by the next
# maintenance run of a live worker; the rest is slack for a loaded machine.
REAP_BOUND = settings.WORKER_STALE_SECONDS + settings.WORKER_MAINTENANCE_SECONDS + 60
WORK_BOUND = 240  # a preparation or an utterance on a loaded machine, worker restart included
# The launcher waits 1 s before it restarts a dead child; here 4 s, longer than a chunk takes,
# so that a worker streaming while Redis is down publishes into the outage.
RESTART_POLICY = RestartPolicy(first_delay=4.0)


class SupervisedStack:
    """A :class:`Stack` kept up by the launcher's :class:`Supervisor`, which ticks in one
    thread for the module's whole run.

    That thread must outlive every child it restarts: the kernel sends a child its
    parent-death signal when the *thread* that started it exits, not only the process.
    """

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.stack = Stack(config)
        self.gave_up: GaveUp | None = None
        self._supervisor: Supervisor | None = None
        self._lock = threading.Lock()  # a tick never overlaps a stop or a start
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    def _supervise(self) -> None:
        while not self._closed.wait(0.5):  # the launcher's own pace
            with self._lock:
                if self._supervisor is None:
                    continue
                try:
                    self._supervisor.tick()
                except GaveUp as exc:
                    self.gave_up, self._supervisor = exc, None

    def start(self) -> None:
        stack = Stack(self.config)
        try:
            stack.start(health_timeout=240)
        except Exception:
            stack.stop()
            raise
        with self._lock:
            self.stack, self._supervisor = stack, Supervisor(stack, RESTART_POLICY)

    def stop(self) -> None:
        """Stop supervising first (it would restart what is being stopped), then the stack."""
        with self._lock:
            self._supervisor = None
        self.stack.stop()

    def close(self) -> None:
        self.stop()
        self._closed.set()
        self._thread.join(timeout=10)

    def worker_process(self, name: str) -> int:
        """The pid of the Dramatiq worker process (the one running tasks) under child ``name``."""
        parent = self.stack.child(name).process.pid
        found = wait_for(lambda: _children(parent), timeout=60)
        assert len(found) == 1, found
        return int(found[0])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None, django_db_blocker: object
) -> Iterator[SupervisedStack]:
    from django.db import connection

    var = tmp_path_factory.mktemp("faults-var")
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
        worker_threads=2,
        worker_shutdown_seconds=60,
    )
    supervised = SupervisedStack(config)
    with live_stack_workers_paused():
        try:
            supervised.start()
            yield supervised
        finally:
            supervised.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("faults-media")
    make_face_video(folder / "face.mp4", seconds=0.6, fps=25, size=(256, 320))
    make_face_video(folder / "slow.mp4", seconds=3.0, fps=25, size=(256, 320))
    make_speech_wav(folder / "short.wav", seconds=1.2, sample_rate=16000)
    make_speech_wav(folder / "medium.wav", seconds=3.2, sample_rate=16000)  # 8 chunks
    make_speech_wav(folder / "long.wav", seconds=8.0, sample_rate=16000)  # 20 chunks
    return folder


COLUMNS = [
    "client got",
    "stack stopped",
    "stack healthy",
    "client told",
    "row settled",
    "works again",
]


@pytest.fixture(scope="module")
def recovery() -> Iterator[dict[str, dict[str, Any]]]:
    """Per fault: what the client got, and the seconds from the fault until the stack was
    stopped and healthy again (a restart), the client was told (an error event, or the last
    event of its work), the row was settled and new work of the same kind was done."""
    times: dict[str, dict[str, Any]] = {}
    yield times
    if not times:
        return
    if RESULTS:
        rounded = {
            fault: {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}
            for fault, row in times.items()
        }
        results = BASE_DIR / RESULTS  # an absolute path stays as it is
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(rounded, indent=2) + "\n")
    lines = ["fault".ljust(32) + "".join(name.rjust(16) for name in COLUMNS)]
    for fault, row in times.items():
        cells = [row.get(name, "-") for name in COLUMNS]
        text = [f"{cell:.1f} s" if isinstance(cell, float) else str(cell) for cell in cells]
        lines.append(fault.ljust(32) + "".join(cell.rjust(16) for cell in text))
    print("\nrecovery times (seconds after the fault)\n" + "\n".join(lines))  # noqa: T201


# -- clients ---------------------------------------------------------------------------------


class Player:
    """A player on a session's SSE feed, as the bundled players behave: it records each event
    with its id and reconnects with ``Last-Event-ID`` whenever the feed drops."""

    def __init__(self, client: ApiClient, session_id: str, last_id: int = 0) -> None:
        self.url = client.url(f"/sessions/{session_id}/events")
        self.headers = {"Authorization": f"Token {client.token}"}
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.drops: list[tuple[float, str]] = []  # when and how each connection ended
        self.resumed_after: list[int] = []  # the Last-Event-ID each reconnection sent
        self.changed = threading.Condition()
        self._last_id = last_id
        self._closed = threading.Event()
        self._response: requests.Response | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 900  # a bound, far above the module's run time
        while not self._closed.is_set() and time.monotonic() < deadline:
            how = self._follow_once()
            if not self._closed.is_set():
                self.drops.append((time.monotonic(), how))
                self._closed.wait(0.5)

    def _follow_once(self) -> str:
        """Follow the feed until it ends: "ended" (cleanly), "timeout" (silent for longer
        than the keep-alives allow), "dropped" (refused or cut) or an HTTP status."""
        headers = dict(self.headers)
        if self._last_id:
            headers["Last-Event-ID"] = str(self._last_id)
        try:
            self._response = requests.get(
                self.url, headers=headers, stream=True, timeout=(5, KEEPALIVE_SECONDS * 2)
            )
            if self._response.status_code != 200:
                return str(self._response.status_code)
            self.resumed_after.append(self._last_id)
            for event_id, payload in sse_payloads(self._response):
                self._record(int(event_id or 0), payload)
            return "ended"
        except requests.Timeout:
            return "timeout"
        except requests.ConnectionError as exc:  # refused, reset, or a read that timed out
            return "timeout" if "timed out" in str(exc) else "dropped"
        except Exception as exc:  # close() cut the response under the reading thread
            return type(exc).__name__
        finally:
            if self._response is not None:
                self._response.close()

    def drops_since(self, moment: float) -> list[str]:
        return [how for when, how in self.drops if when >= moment]

    def _record(self, event_id: int, payload: dict[str, Any]) -> None:
        with self.changed:
            self.events.append((event_id, payload))
            self._last_id = max(self._last_id, event_id)
            self.changed.notify_all()

    def wait(self, predicate: Callable[[], Any], timeout: float) -> Any:
        with self.changed:
            found = self.changed.wait_for(predicate, timeout)
        assert found, f"not seen within {timeout} s; the player got {self.events[-5:]}"
        return found

    def of(self, request_id: str, name: str | None = None) -> list[dict[str, Any]]:
        return [
            p
            for _, p in self.events
            if p.get("request_id") == request_id and (name is None or p["event"] == name)
        ]

    def ended(self, request_id: str) -> dict[str, Any] | None:
        """The request's ``speaking_ended`` event, once the player has it."""
        found = self.of(request_id, "speaking_ended")
        return found[0] if found else None

    def close(self) -> None:
        self._closed.set()
        if self._response is not None:
            self._response.close()


def assert_nothing_lost_or_repeated(player: Player) -> None:
    """Ids only go up; each utterance starts once, its chunks arrive once each, in order, from
    index 0, and it ends once."""
    ids = [event_id for event_id, _ in player.events]
    assert all(event_id > 0 for event_id in ids), ids
    assert ids == sorted(set(ids)), f"ids repeated or out of order: {ids}"
    requests_seen = {p["request_id"] for _, p in player.events if "request_id" in p}
    for request_id in requests_seen:
        indexes = [p["index"] for p in player.of(request_id, "chunk")]
        assert indexes == list(range(len(indexes))), (request_id, indexes)
        assert len(player.of(request_id, "speaking_started")) == 1
        assert len(player.of(request_id, "speaking_ended")) == 1


def unsettled_rows() -> list[str]:
    """Rows that some process still has to finish."""
    rows = [
        f"avatar {a.avatar_id}: {a.status}"
        for a in Avatar.objects.filter(status__in=[Avatar.Status.QUEUED, Avatar.Status.PREPARING])
    ]
    active_jobs = [GenerationJob.Status.QUEUED, GenerationJob.Status.RUNNING]
    rows += [
        f"job {j.request_id}: {j.status}"
        for j in GenerationJob.objects.filter(status__in=active_jobs)
    ]
    rows += [
        f"utterance {r.request_id}: {r.status}"
        for r in StreamRequest.objects.filter(status__in=StreamRequest.ACTIVE_STATUSES)
    ]
    return rows


def _open_session(client: ApiClient) -> str:
    response = client.post(f"/sessions/create?avatar_id=host&chunk_duration={CHUNK_SECONDS}")
    assert response.status_code in (200, 201), response.text
    return str(response.json()["session_id"])


def _stream(client: ApiClient, session_id: str, audio: Path) -> str:
    """Send one utterance (batch size 2: many small chunks); its request id."""
    with audio.open("rb") as handle:
        response = client.post(
            f"/sessions/{session_id}/stream",
            data={"batch_size": 2},
            files={"audio_file": (audio.name, handle, "audio/wav")},
        )
    assert response.status_code == 200, response.text
    return str(response.json()["request_id"])


def _prepare(client: ApiClient, avatar_id: str, video: Path) -> None:
    with video.open("rb") as handle:
        response = client.post(
            "/avatars/prepare",
            data={"avatar_id": avatar_id, "batch_size": 4},
            files={"video_file": (video.name, handle, "video/mp4")},
        )
    assert response.status_code == 200, response.text


def _ready_user(platform: SupervisedStack, media: Path, username: str) -> ApiClient:
    client = api_user(platform.base_url, username)
    _prepare(client, "host", media / "face.mp4")
    events = SseFollower(client, "/avatars/host/events", {"ready", "error"}).wait(WORK_BOUND)
    assert events[-1]["event"] == "ready", events[-1]
    return client


def _request_status(request_id: str) -> str:
    return str(StreamRequest.objects.get(request_id=request_id).status)


def _outcome(player: Player, request_id: str) -> str:
    """What the player got for an utterance cut by a fault, checked against its row."""
    ended = player.ended(request_id)
    assert ended is not None
    status = _request_status(request_id)
    if ended["reason"] == "complete":
        chunks = player.of(request_id, "chunk")
        assert [c["index"] for c in chunks] == list(range(chunks[0]["total_chunks"]))
        assert status == "completed"
        return "the rest"
    assert ended["reason"] == "error" and status == "failed", (ended, status)
    assert len(player.of(request_id, "error")) == 1
    return "an error event"


def _speaks_again(client: ApiClient, session_id: str, player: Player, audio: Path) -> str:
    """A new utterance of the session streams to the end; its request id."""
    request_id = _stream(client, session_id, audio)
    player.wait(lambda: player.ended(request_id), timeout=WORK_BOUND)
    ended = player.ended(request_id)
    assert ended is not None and ended["reason"] == "complete", player.of(request_id)
    return request_id


def _settled(platform: SupervisedStack) -> None:
    assert unsettled_rows() == []
    assert platform.gave_up is None


# -- the cases -------------------------------------------------------------------------------


def test_a_worker_killed_mid_preparation_fails_it_and_a_new_preparation_succeeds(
    platform: SupervisedStack, media: Path, recovery: dict[str, dict[str, Any]]
) -> None:
    client = api_user(platform.base_url, "fault-prepare")
    _prepare(client, "victim", media / "slow.mp4")
    follower = SseFollower(client, "/avatars/victim/events", {"ready", "error"})
    wait_for(lambda: any(e["status"] == "preparing" for e in follower.events), timeout=120)
    killed_at = time.monotonic()
    os.kill(platform.worker_process("worker-prepare"), signal.SIGKILL)

    events = follower.wait(timeout=REAP_BOUND)
    told = time.monotonic() - killed_at
    assert events[-1]["event"] == "error", events[-1]
    assert events[-1]["message"] == PREPARE_WORKER_LOST
    avatar = client.get("/avatars/victim").json()
    assert avatar["status"] == "failed" and avatar["error"] == PREPARE_WORKER_LOST
    _settled(platform)

    # The supervisor restarted the worker; preparing the avatar again needs nothing else.
    _prepare(client, "victim", media / "face.mp4")
    again = SseFollower(client, "/avatars/victim/events", {"ready", "error"}).wait(WORK_BOUND)
    assert again[-1]["event"] == "ready", again[-1]
    _settled(platform)
    recovery["worker killed mid-preparation"] = {
        "client got": "an error event",
        "client told": told,
        "row settled": told,  # the error event is sent once the row is failed
        "works again": time.monotonic() - killed_at,
    }


def test_a_worker_killed_mid_utterance_ends_it_with_an_error_and_the_session_streams_again(
    platform: SupervisedStack, media: Path, recovery: dict[str, dict[str, Any]]
) -> None:
    client = _ready_user(platform, media, "fault-stream")
    session_id = _open_session(client)
    player = Player(client, session_id)
    request_id = _stream(client, session_id, media / "long.wav")
    player.wait(lambda: len(player.of(request_id, "chunk")) >= 2, timeout=WORK_BOUND)
    killed_at = time.monotonic()
    os.kill(platform.worker_process("worker"), signal.SIGKILL)
    delivered = player.of(request_id, "chunk")

    player.wait(lambda: player.ended(request_id), timeout=REAP_BOUND)
    told = time.monotonic() - killed_at
    assert _outcome(player, request_id) == "an error event"
    assert player.of(request_id, "error")[0]["message"] == STREAM_WORKER_LOST
    assert player.of(request_id, "chunk")[: len(delivered)] == delivered
    for chunk in player.of(request_id, "chunk"):  # what was delivered can still be fetched
        assert client.get(chunk["url"]).status_code == 200, chunk

    _speaks_again(client, session_id, player, media / "short.wav")
    player.close()
    assert_nothing_lost_or_repeated(player)
    _settled(platform)
    recovery["worker killed mid-utterance"] = {
        "client got": "an error event",
        "client told": told,
        "row settled": told,
        "works again": time.monotonic() - killed_at,
    }


def test_redis_killed_mid_utterance_is_restarted_and_the_player_resumes(
    platform: SupervisedStack, media: Path, recovery: dict[str, dict[str, Any]]
) -> None:
    client = _ready_user(platform, media, "fault-redis")
    session_id = _open_session(client)
    player = Player(client, session_id)
    request_id = _stream(client, session_id, media / "medium.wav")
    player.wait(lambda: len(player.of(request_id, "chunk")) >= 2, timeout=WORK_BOUND)
    had = player.events[-1][0]
    killed_at = time.monotonic()
    os.kill(platform.stack.child("redis").process.pid, signal.SIGKILL)

    player.wait(lambda: player.ended(request_id), timeout=WORK_BOUND)
    told = time.monotonic() - killed_at
    # The feed ended cleanly with Redis (it was not left open and silent), and the player
    # resumed from the last event it had.
    assert player.drops_since(killed_at)[0] == "ended", player.drops
    assert min(player.resumed_after[1:]) >= had
    got = _outcome(player, request_id)
    seen = client.get(f"/sessions/{session_id}/status").json()["last_event_id"]
    assert seen >= player.events[-1][0]  # the counter did not go back

    _speaks_again(client, session_id, player, media / "short.wav")
    player.close()
    assert_nothing_lost_or_repeated(player)
    _settled(platform)
    recovery["redis killed mid-utterance"] = {
        "client got": got,
        "client told": told,
        "row settled": told,
        "works again": time.monotonic() - killed_at,
    }


def test_a_restart_of_the_whole_stack_keeps_open_sessions_and_players_resume(
    platform: SupervisedStack, media: Path, recovery: dict[str, dict[str, Any]]
) -> None:
    client = _ready_user(platform, media, "fault-restart")
    session_id = _open_session(client)
    player = Player(client, session_id)
    first = _speaks_again(client, session_id, player, media / "short.wav")
    mark_id = next(i for i, p in player.events if p == player.ended(first))
    request_id = _stream(client, session_id, media / "medium.wav")
    player.wait(lambda: len(player.of(request_id, "chunk")) >= 1, timeout=WORK_BOUND)

    stopped_at = time.monotonic()
    platform.stop()  # graceful: the running utterance may finish; Redis stops last
    stopped = time.monotonic() - stopped_at
    finished_in_stop = _request_status(request_id) == "completed"
    platform.start()
    healthy = time.monotonic() - stopped_at

    player.wait(lambda: player.ended(request_id), timeout=REAP_BOUND + WORK_BOUND)
    told = time.monotonic() - stopped_at
    assert player.drops_since(stopped_at) and min(player.resumed_after[1:]) > mark_id
    got = _outcome(player, request_id)

    # A player resuming from before the restart gets exactly the newer events.
    late = Player(client, session_id, last_id=mark_id)
    late.wait(lambda: late.ended(request_id), timeout=60)
    late.close()
    assert late.events == [(i, p) for i, p in player.events if i > mark_id]

    _speaks_again(client, session_id, player, media / "short.wav")
    player.close()
    assert_nothing_lost_or_repeated(player)
    _settled(platform)
    recovery["whole stack restarted"] = {
        "client got": got,
        "stack stopped": stopped,
        "stack healthy": healthy,
        "client told": told,
        "row settled": stopped if finished_in_stop else told,
        "works again": time.monotonic() - stopped_at,
    }
