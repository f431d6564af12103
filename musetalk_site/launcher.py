"""One command for the whole platform: ``python -m musetalk_site.launcher``.

Checks its environment first (a bad value is one line on stderr and exit status 2, before
anything starts), resolves the model profile with the engine's own ``auto`` rule
(:func:`inference.profiles.resolve_profile`: real weights, else a download, else a loud demo
mode), prepares the database and static files, creates the demo account, checks that
``ANONYMOUS_ACCESS_USER`` (when set) names an existing user and says loudly that it is on,
then runs Redis (embedded unless ``REDIS_URL`` is set), the workers and daphne until Ctrl-C,
restarting any of them that dies (:class:`Supervisor`). Ctrl-C stops them gracefully; a
second one kills what is still running.

This process never imports torch: only the worker loads models.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from django.core.exceptions import ImproperlyConfigured

from inference.config import PROFILES
from inference.errors import InferenceError
from inference.profiles import DEMO_WARNING, PROFILE_AUTO, ResolvedProfile, resolve_profile
from musetalk_site.env import env_choice, env_float, env_int, env_str, env_username
from musetalk_site.stack import BASE_DIR, Child, Stack, StackConfig

logger = logging.getLogger("musetalk.launcher")

EXIT_BAD_CONFIG = 2


@dataclass(frozen=True)
class LaunchConfig:
    """What the launcher itself reads from the environment, checked before anything starts."""

    host: str
    port: int
    redis_url: str | None
    var_dir: Path
    models_dir: Path
    profile: str
    worker_processes: int
    worker_threads: int
    prepare_threads: int
    worker_shutdown_seconds: float
    startup_timeout: float
    anonymous_access_user: str  # "": off


def read_launch_config(env: Mapping[str, str]) -> LaunchConfig:
    """Parse ``env`` with the typed helpers; ``ImproperlyConfigured`` names a bad variable."""
    return LaunchConfig(
        host=env_str("HOST", "127.0.0.1", environ=env),
        port=env_int("PORT", 8000, minimum=1, maximum=65535, environ=env),
        redis_url=env_str("REDIS_URL", environ=env) or None,
        var_dir=Path(env_str("VAR_DIR", str(BASE_DIR / "var"), environ=env)),
        models_dir=Path(env_str("MODELS_DIR", str(BASE_DIR / "models"), environ=env)),
        profile=env_choice(
            "MUSETALK_MODEL_PROFILE", PROFILE_AUTO, (PROFILE_AUTO, *PROFILES), environ=env
        ),
        worker_processes=env_int("WORKER_PROCESSES", 1, minimum=1, environ=env),
        worker_threads=env_int("WORKER_THREADS", 4, minimum=1, environ=env),
        prepare_threads=env_int("PREPARE_WORKER_THREADS", 1, minimum=1, environ=env),
        worker_shutdown_seconds=env_float(
            "WORKER_SHUTDOWN_SECONDS", 30.0, minimum=1.0, environ=env
        ),
        startup_timeout=env_float("STARTUP_TIMEOUT", 300.0, minimum=1.0, environ=env),
        anonymous_access_user=env_username("ANONYMOUS_ACCESS_USER", environ=env),
    )


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        cwd=BASE_DIR,
        env=env,
        text=True,
        capture_output=True,
    )


def _setup_database(env: dict[str, str]) -> None:
    for args in (("migrate", "--noinput", "-v0"), ("collectstatic", "--noinput", "-v0")):
        result = _manage(*args, env=env)
        if result.returncode != 0:
            sys.stderr.write(result.stdout + result.stderr)
            raise SystemExit(f"manage.py {args[0]} failed")
    result = _manage("ensure_demo_user", env=env)
    sys.stdout.write(result.stdout)


def check_anonymous_access(env: dict[str, str], config: LaunchConfig) -> str | None:
    """Say loudly that anonymous access is on; the reason not to start when its user does
    not exist (None: start)."""
    if not config.anonymous_access_user:
        return None
    result = _manage("check_anonymous_access", env=env)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return lines[-1] if lines else "manage.py check_anonymous_access failed"
    warning = result.stdout.strip()
    bar = "!" * (len(warning) + 8)
    logger.warning("\n%s\n!!! %s !!!\n%s", bar, warning, bar)
    return None


def _download_models(models_dir: Path, *, env: dict[str, str]) -> None:
    """``manage.py download_models`` in a child process; ``InferenceError`` when it fails."""
    logger.info("no MuseTalk weights in %s; trying python manage.py download_models", models_dir)
    result = _manage("download_models", "--models-dir", str(models_dir), env=env)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise InferenceError(lines[-1] if lines else "manage.py download_models failed")


def resolve_launch_profile(env: dict[str, str], config: LaunchConfig) -> ResolvedProfile:
    """Apply the ``auto`` rule once here, so the worker does not retry the download.

    The outcome goes into ``env`` for the children. An explicit ``musetalk-v15`` with missing
    weights raises ``MissingWeightsError``, naming every missing file.
    """
    download = functools.partial(_download_models, env=env)
    resolved = resolve_profile(config.profile, config.models_dir, download=download)
    env["MUSETALK_MODEL_PROFILE"] = resolved.profile
    if resolved.demo:
        env["MUSETALK_DEMO_MODE"] = "1"
        bar = "!" * (len(DEMO_WARNING) + 8)
        logger.warning("\n%s\n!!! %s !!!\n%s", bar, DEMO_WARNING, bar)
    return resolved


def _stack_config(config: LaunchConfig, env: dict[str, str]) -> StackConfig:
    return StackConfig(
        host=config.host,
        port=config.port,
        redis_url=config.redis_url,
        var_dir=config.var_dir,
        env=env,
        worker_processes=config.worker_processes,
        worker_threads=config.worker_threads,
        prepare_threads=config.prepare_threads,
        worker_shutdown_seconds=config.worker_shutdown_seconds,
    )


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead child is started again: after a delay that doubles with each recent crash,
    and not more than ``limit`` times within ``window`` seconds (so a child that crashes at
    boot does not spin)."""

    first_delay: float = 1.0
    max_delay: float = 30.0
    limit: int = 5
    window: float = 300.0

    def delay(self, recent_crashes: int) -> float | None:
        """Seconds to wait before restarting after the ``recent_crashes``-th crash (None: stop)."""
        if recent_crashes > self.limit:
            return None
        return min(self.max_delay, self.first_delay * 2 ** (recent_crashes - 1))


class GaveUp(RuntimeError):
    """A child crashed more often than the restart policy allows."""


class Supervisor:
    """Keeps a started stack's children running; call :meth:`tick` every second or so."""

    def __init__(
        self,
        stack: Stack,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stack = stack
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.crashes: dict[str, list[float]] = {}
        self.due: dict[str, float] = {}  # name -> when the pending restart is due

    def tick(self) -> None:
        """Reap children that died and restart those whose delay is over; ``GaveUp`` past the
        policy's limit."""
        for child in list(self.stack.children):
            if child.name in self.due:
                if self.clock() >= self.due[child.name]:
                    del self.due[child.name]
                    fresh = self.stack.respawn(child.name)
                    logger.warning("restarted %s (pid %s)", child.name, fresh.process.pid)
            elif child.process.poll() is not None:
                self._crashed(child)

    def _crashed(self, child: Child) -> None:
        code = child.process.returncode
        self.stack.reap(child)
        now = self.clock()
        recent = [t for t in self.crashes.get(child.name, []) if now - t < self.policy.window]
        self.crashes[child.name] = recent + [now]
        delay = self.policy.delay(len(recent) + 1)
        if delay is None:
            raise GaveUp(
                f"{child.name} exited {len(recent) + 1} times in {self.policy.window:.0f} s "
                f"(last exit code {code}); giving up"
            )
        self.due[child.name] = now + delay
        logger.error("%s exited (code %s); restarting it in %g s", child.name, code, delay)


def _supervise(supervisor: Supervisor, stop: threading.Event) -> int:
    while not stop.wait(0.5):
        try:
            supervisor.tick()
        except GaveUp as exc:
            logger.error("%s; stopping", exc)
            return 1
    return 0


def _run(stack: Stack, *, startup_timeout: float) -> int:
    """Start the stack and keep it up until Ctrl-C (or a child that keeps crashing); always
    stop everything."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            logger.warning("stopping now: killing what is still running")
            stack.hurry()
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        stack.start(health_timeout=startup_timeout)
        logger.info("MuseTalk is running: dashboard at %s/ (Ctrl-C to stop)", stack.base_url)
        return _supervise(Supervisor(stack), stop)
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    finally:
        logger.info(
            "stopping web and workers (running tasks get up to %g s; Ctrl-C again to kill"
            " them), then Redis",
            stack.config.worker_shutdown_seconds,
        )
        stack.stop()


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "musetalk_site.settings")
    try:
        config = read_launch_config(env)
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return EXIT_BAD_CONFIG
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        resolve_launch_profile(env, config)
    except InferenceError as exc:
        sys.stderr.write(f"{exc.message}\n")
        return 1
    _setup_database(env)
    refusal = check_anonymous_access(env, config)
    if refusal is not None:
        sys.stderr.write(f"configuration error: {refusal}\n")
        return EXIT_BAD_CONFIG
    return _run(Stack(_stack_config(config, env)), startup_timeout=config.startup_timeout)


if __name__ == "__main__":
    sys.exit(main())
