"""Process faults on the platform as ``bin/run`` starts it (the launcher, its embedded Redis,
two workers and daphne): Ctrl-C lets running work finish and hands fetched messages back, and
a killed worker is restarted while the web keeps answering.

The recovery times are printed (``pytest -s``); nothing asserts how fast they are.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import requests
from dramatiq.brokers.redis import RedisBroker

from musetalk_site.services import PING_PREFIX
from musetalk_site.stack import BASE_DIR, Stack, StackConfig, free_port
from musetalk_site.tasks import platform_ping
from tests.media import make_face_video

pytestmark = [pytest.mark.e2e]

NAMESPACE = "musetalk:dramatiq"  # settings.DRAMATIQ_BROKER
RUNNING = "MuseTalk is running: dashboard at"  # the launcher, once it supervises


@dataclass
class Launched:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    var_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def redis_url(self) -> str:
        found = re.search(r"embedded Redis on 127\.0\.0\.1:(\d+)", self.output())
        assert found, self.output()[-3000:]
        return f"redis://127.0.0.1:{found.group(1)}/0"

    def health(self) -> int:
        """The HTTP status of /health; 0 when nothing answers."""
        try:
            return requests.get(self.base_url + "/health", timeout=10).status_code
        except requests.RequestException:
            return 0

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=400)
        except subprocess.TimeoutExpired:
            self.process.kill()  # its children get SIGTERM from the kernel (PDEATHSIG)
            return self.process.wait(timeout=30)


def _launch(tmp: Path, **env_overrides: str) -> Launched:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(
        VAR_DIR=str(tmp / "var"),
        MEDIA_ROOT=str(tmp / "var" / "media"),
        MODELS_DIR=str(tmp / "models"),
        PORT=str(port),
        MUSETALK_MODEL_PROFILE="random-tiny",
        **env_overrides,
    )
    log = tmp / "launcher.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "musetalk_site.launcher"],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    launched = Launched(process, port, log, tmp / "var")
    deadline = time.monotonic() + 300
    # Up once the launcher says so: until then it is still starting, and a child that dies
    # during startup stops it (a /health 200 alone can come a moment before that).
    while RUNNING not in launched.output() or launched.health() != 200:
        assert process.poll() is None, launched.output()[-5000:]
        assert time.monotonic() < deadline, launched.output()[-5000:]
        time.sleep(0.5)
    return launched


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of each live child of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat[1]) == pid and stat[0] != "Z":
            found.append((int(entry.name), cmdline))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _generate_worker(launcher_pid: int) -> tuple[int, int]:
    """(the Dramatiq parent serving the generate queues, its one worker process), once the
    launcher has exactly one such parent with exactly one worker process."""
    found: tuple[list[int], list[int]] = ([], [])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        parents = [
            pid for pid, cmd in _children(launcher_pid) if "--queues default generate" in cmd
        ]
        children = [pid for pid, _ in _children(parents[0])] if len(parents) == 1 else []
        found = (parents, children)
        if len(parents) == 1 and len(children) == 1:
            return parents[0], children[0]
        time.sleep(0.2)
    raise AssertionError(f"generate worker parents {found[0]}, worker processes {found[1]}")


def _demo_token(launched: Launched) -> str:
    found = re.search(r"API token: (\w+)", launched.output())
    assert found, launched.output()[-3000:]
    return found.group(1)


def _prepare(launched: Launched, token: str, avatar_id: str, video: Path) -> None:
    with video.open("rb") as handle:
        response = requests.post(
            launched.base_url + "/avatars/prepare",
            headers={"Authorization": f"Token {token}"},
            data={"avatar_id": avatar_id, "batch_size": 4},
            files={"video_file": (video.name, handle, "video/mp4")},
            timeout=60,
        )
    assert response.status_code == 200, response.text


def _avatar_status(launched: Launched, token: str, avatar_id: str) -> str:
    response = requests.get(
        launched.base_url + f"/avatars/{avatar_id}",
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )
    return str(response.json()["status"])


def _avatar_rows(var_dir: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(var_dir / "db.sqlite3") as db:
        rows = db.execute("SELECT avatar_id, status, finished_at FROM avatars_avatar").fetchall()
    return {avatar_id: (status, finished) for avatar_id, status, finished in rows}


def test_ctrl_c_lets_the_running_task_finish_and_hands_fetched_messages_back(tmp_path: Path):
    video = make_face_video(tmp_path / "face.mp4", seconds=0.8, fps=25, size=(256, 320))
    launched = _launch(tmp_path, WORKER_SHUTDOWN_SECONDS="300")
    try:
        token = _demo_token(launched)
        _prepare(launched, token, "first", video)
        _prepare(launched, token, "second", video)  # one thread: waits behind the first
        deadline = time.monotonic() + 120
        while _avatar_status(launched, token, "first") != "preparing":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        signalled_at = datetime.now(UTC)
    finally:
        code = launched.stop()
    output = launched.output()
    assert code == 0, output[-5000:]
    assert "Killing worker process" not in output
    assert output.count("Stopping worker process") == 2  # each worker process told once

    rows = _avatar_rows(launched.var_dir)
    status, finished_at = rows["first"]
    assert status == "ready", output[-5000:]
    assert finished_at is not None
    assert datetime.fromisoformat(finished_at).replace(tzinfo=UTC) > signalled_at
    assert rows["second"][0] == "queued"

    # Redis kept its data (append-only file); the second message is back in its queue and no
    # consumer holds a message any more.
    redis_stack = Stack(StackConfig(var_dir=launched.var_dir, log_dir=tmp_path / "logs"))
    try:
        client = redis.Redis.from_url(redis_stack.start_redis())
        assert list(client.scan_iter(match=f"{NAMESPACE}:__acks__*")) == []
        assert client.llen(f"{NAMESPACE}:prepare") == 1
    finally:
        redis_stack.stop()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    launched = _launch(tmp_path_factory.mktemp("faults"))
    yield launched
    launched.stop()


def _ping_runs(redis_url: str) -> bool:
    """Send the platform's ping actor through the launcher's Redis; True once a worker ran it."""
    token = secrets.token_hex(8)
    broker = RedisBroker(url=redis_url, namespace=NAMESPACE)
    try:
        broker.enqueue(platform_ping.message(token))
    finally:
        broker.close()
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if client.exists(PING_PREFIX + token):
            return True
        time.sleep(0.1)
    return False


# The web must keep answering: a single /health probe may go unanswered for its 10 s on an
# overloaded machine (two cores, a worker booting torch), three in a row may not.
UNANSWERED_LIMIT = 3


def _recovery(launched: Launched, killed_at: float) -> dict[str, float]:
    """Watch /health until it is 503 and then 200 again; the web must answer throughout."""
    seen: dict[str, float] = {}
    unanswered = 0
    deadline = time.monotonic() + 300
    while "200" not in seen:
        assert time.monotonic() < deadline, (seen, launched.output()[-5000:])
        status = launched.health()
        unanswered = unanswered + 1 if status == 0 else 0
        assert unanswered < UNANSWERED_LIMIT, (
            f"the web stopped answering ({unanswered} probes in a row)\n"
            + launched.output()[-5000:]
        )
        if status == 0:
            continue
        assert status in (200, 503), f"/health answered {status}"
        if status == 503 and "503" not in seen:
            seen["503"] = time.monotonic() - killed_at
            login = requests.get(launched.base_url + "/login/", timeout=10)
            assert login.status_code == 200  # pages still served while the worker is down
        elif status == 200 and "503" in seen:
            seen["200"] = time.monotonic() - killed_at
        time.sleep(0.2)
    assert launched.process.poll() is None
    return seen


def _kill_and_recover(launched: Launched, pid: int, what: str) -> None:
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    seen = _recovery(launched, killed_at)
    assert _ping_runs(launched.redis_url()), "work sent after the restart never ran"
    seen["task done"] = time.monotonic() - killed_at
    print(f"\n{what} killed -> " + ", ".join(f"{k} at {v:.1f} s" for k, v in seen.items()))  # noqa: T201


def test_a_killed_worker_process_is_restarted_while_the_web_keeps_answering(
    platform: Launched,
):
    parent, child = _generate_worker(platform.process.pid)
    _kill_and_recover(platform, child, "worker process")
    assert "worker exited (code 1); restarting it in" in platform.output()
    new_parent, new_child = _generate_worker(platform.process.pid)
    assert new_parent != parent and new_child != child


def test_a_killed_worker_parent_is_restarted_and_its_orphan_stopped(platform: Launched):
    parent, child = _generate_worker(platform.process.pid)
    _kill_and_recover(platform, parent, "rundramatiq parent")
    assert "worker exited (code -9); restarting it in" in platform.output()
    assert not _alive(child)  # the orphaned worker process is gone
    new_parent, _ = _generate_worker(platform.process.pid)  # exactly one, with one process
    assert new_parent != parent
