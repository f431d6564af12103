"""The process stack's own guarantees, on real processes: the embedded Redis keeps what it
acknowledged across a kill, and a child that keeps crashing is restarted with a growing delay
and then given up on."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from musetalk_site.launcher import GaveUp, RestartPolicy, Supervisor
from musetalk_site.stack import AOF_MANIFEST, Stack, StackConfig, find_redis_server, free_port


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def _wait_for_redis(url: str) -> redis.Redis:
    client = _client(url)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            return client
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_embedded_redis_loses_nothing_it_acknowledged_when_killed(tmp_path: Path):
    stack = Stack(StackConfig(var_dir=tmp_path, log_dir=tmp_path / "logs"))
    try:
        url = stack.start_redis()
        client = _client(url)
        for _ in range(5):
            client.incr("musetalk:test:event_id")
        # appendfsync everysec: a write reaches the file within about a second (two when the
        # disk is slow to sync); what is older than that survives a kill.
        time.sleep(3)
        stack.restart("redis")  # SIGKILL: no shutdown save
        client = _wait_for_redis(url)
        assert client.incr("musetalk:test:event_id") == 6  # ids never go backwards
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    finally:
        stack.stop()
    assert (tmp_path / "redis" / AOF_MANIFEST).exists()


def test_data_from_before_the_append_only_file_is_carried_over(tmp_path: Path):
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    binary = find_redis_server()
    assert binary is not None
    port = free_port()
    old = subprocess.Popen(
        [binary, "--port", str(port), "--dir", str(data_dir), "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = _wait_for_redis(f"redis://127.0.0.1:{port}/0")
        client.set("musetalk:test:old", "kept")
        client.shutdown(save=True)
    except redis.ConnectionError:
        pass  # SHUTDOWN closes the connection
    finally:
        old.wait(timeout=30)
    assert (data_dir / "dump.rdb").exists() and not (data_dir / AOF_MANIFEST).exists()

    stack = Stack(StackConfig(var_dir=tmp_path, log_dir=tmp_path / "logs"))
    try:
        url = stack.start_redis()
        assert _client(url).get("musetalk:test:old") == b"kept"
        assert (data_dir / AOF_MANIFEST).exists()
        _client(url).set("musetalk:test:new", "kept too")
        stack.restart("redis")  # from now on it starts from the append-only file
        client = _wait_for_redis(url)
        assert client.mget("musetalk:test:old", "musetalk:test:new") == [b"kept", b"kept too"]
    finally:
        stack.stop()


def test_restart_delays_double_up_to_a_cap_and_then_the_policy_gives_up():
    policy = RestartPolicy(first_delay=1, max_delay=10, limit=6, window=300)
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 10, 10, None]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _wait_dead(stack: Stack, name: str) -> None:
    stack.child(name).process.wait(timeout=30)


def test_a_worker_that_crashes_at_boot_is_restarted_with_backoff_then_given_up_on(tmp_path):
    crash = [sys.executable, "-c", "raise SystemExit(3)"]
    stack = Stack(StackConfig(var_dir=tmp_path, log_dir=tmp_path / "logs"))
    clock = _Clock()
    supervisor = Supervisor(stack, RestartPolicy(first_delay=1, limit=3, window=60), clock)
    stack.spawn("worker", crash)
    pids = [stack.child("worker").process.pid]
    try:
        for delay in (1, 2, 4):
            _wait_dead(stack, "worker")
            supervisor.tick()  # notices the crash, schedules the restart
            assert supervisor.due["worker"] == clock.now + delay
            clock.now += delay - 0.5
            supervisor.tick()  # not yet
            assert stack.child("worker").process.pid == pids[-1]
            clock.now += 0.5
            supervisor.tick()
            pids.append(stack.child("worker").process.pid)
            assert pids[-1] != pids[-2]
        _wait_dead(stack, "worker")
        with pytest.raises(GaveUp, match=r"worker exited 4 times in 60 s \(last exit code 3\)"):
            supervisor.tick()
    finally:
        stack.stop()
    assert len(pids) == 4  # the first start and three restarts, no more


def test_crashes_older_than_the_window_are_forgotten(tmp_path):
    stack = Stack(StackConfig(var_dir=tmp_path, log_dir=tmp_path / "logs"))
    clock = _Clock()
    supervisor = Supervisor(stack, RestartPolicy(first_delay=1, limit=1, window=60), clock)
    stack.spawn("web", [sys.executable, "-c", "raise SystemExit(1)"])
    try:
        for _ in range(3):  # one crash a minute is within a limit of one per minute
            _wait_dead(stack, "web")
            supervisor.tick()
            assert supervisor.due["web"] == clock.now + 1
            clock.now += 61
            supervisor.tick()
    finally:
        stack.stop()


# A parent that passes SIGTERM on to its child, as Dramatiq's main process does; the child
# writes down how many SIGTERMs it got.
_RELAYING_PARENT = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
received = []
signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
while not received:
    time.sleep(0.05)
time.sleep(0.3)  # apart from any SIGTERM sent to the child directly, so neither is merged
child.send_signal(signal.SIGTERM)
child.wait()
"""
_COUNTING_CHILD = """
import signal, sys, time
from pathlib import Path
received = []
signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
Path(sys.argv[1]).write_text("ready")
while not received:
    time.sleep(0.05)
time.sleep(1.0)  # a second SIGTERM sent with the first arrives within this
Path(sys.argv[2]).write_text(str(len(received)))
"""


def _wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_stop_sends_one_sigterm_to_each_process_of_a_worker_group(tmp_path):
    ready, count = tmp_path / "ready", tmp_path / "count"
    stack = Stack(StackConfig(var_dir=tmp_path, log_dir=tmp_path / "logs"))
    parent = [sys.executable, "-c", _RELAYING_PARENT, _COUNTING_CHILD, str(ready), str(count)]
    stack.spawn("worker", parent)
    _wait_for_file(ready)
    stack.stop(grace=60)
    assert count.read_text() == "1"


def test_hurry_cuts_the_wait_for_a_process_that_does_not_stop(tmp_path):
    ready = tmp_path / "ready"
    stubborn = (
        "import signal, sys, time; from pathlib import Path; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "Path(sys.argv[1]).write_text('ready'); time.sleep(600)"
    )
    stack = Stack(StackConfig(var_dir=tmp_path, log_dir=tmp_path / "logs"))
    stack.spawn("worker", [sys.executable, "-c", stubborn, str(ready)])
    process = stack.child("worker").process
    _wait_for_file(ready)
    stopping = threading.Thread(target=stack.stop, kwargs={"grace": 600})
    stopping.start()
    stack.hurry()
    stopping.join(timeout=60)
    assert not stopping.is_alive()
    assert process.returncode == -signal.SIGKILL
