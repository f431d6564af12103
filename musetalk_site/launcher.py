"""One command for the whole platform: ``python -m musetalk_site.launcher``.

Checks its environment first (a bad value is one line on stderr and exit status 2, before
anything starts), resolves the model profile with the engine's own ``auto`` rule
(:func:`inference.profiles.resolve_profile`: real weights, else a download, else a loud demo
mode), prepares the database and static files, creates the demo account, then runs Redis
(embedded unless ``REDIS_URL`` is set), the worker and daphne until Ctrl-C.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from django.core.exceptions import ImproperlyConfigured

from inference.config import PROFILES
from inference.errors import InferenceError
from inference.profiles import DEMO_WARNING, PROFILE_AUTO, ResolvedProfile, resolve_profile
from musetalk_site.env import env_choice, env_float, env_int, env_str
from musetalk_site.stack import BASE_DIR, Stack, StackConfig

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
    startup_timeout: float


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
        startup_timeout=env_float("STARTUP_TIMEOUT", 300.0, minimum=1.0, environ=env),
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
    )


def _wait_for_stop(stack: Stack, stop: threading.Event) -> int:
    while not stop.wait(1.0):
        dead = stack.dead_child()
        if dead is not None:
            logger.error("%s exited (code %s); stopping", dead.name, dead.process.returncode)
            return 1
    return 0


def _run(stack: Stack, *, startup_timeout: float) -> int:
    """Start the stack and keep it up until Ctrl-C or a dead child; always stop everything."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        stack.start(health_timeout=startup_timeout)
        logger.info("MuseTalk is running: dashboard at %s/ (Ctrl-C to stop)", stack.base_url)
        return _wait_for_stop(stack, stop)
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    finally:
        logger.info("stopping web, worker and Redis")
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
    return _run(Stack(_stack_config(config, env)), startup_timeout=config.startup_timeout)


if __name__ == "__main__":
    sys.exit(main())
