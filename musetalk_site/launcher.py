"""One command for the whole platform: ``python -m musetalk_site.launcher``.

Prepares the database and static files, creates the demo account, resolves the model
profile (``auto``: real weights, else a download, else a loud demo mode), then runs
Redis (embedded unless ``REDIS_URL`` is set), the worker and daphne until Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

from musetalk_site.stack import BASE_DIR, Stack, StackConfig

logger = logging.getLogger("musetalk.launcher")

DEMO_WARNING = "demo mode: random weights, output is not real lip-sync"


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


def _require_weights(models_dir: Path) -> None:
    from inference.errors import MissingWeightsError
    from inference.models import missing_weights

    missing = missing_weights(models_dir)
    if missing:
        raise SystemExit(str(MissingWeightsError(missing, str(models_dir))))


def _weights_missing(models_dir: Path) -> bool:
    from inference.models import missing_weights

    return bool(missing_weights(models_dir))


def _resolve_profile(env: dict[str, str]) -> None:
    """Apply the ``auto`` rule once here, so the worker does not retry the download.

    An explicit ``musetalk-v15`` with missing weights stops the launch at once, naming
    every missing file and the command that downloads them.
    """
    requested = env.get("MUSETALK_MODEL_PROFILE", "auto") or "auto"
    models_dir = Path(env.get("MODELS_DIR", str(BASE_DIR / "models")))
    if requested == "musetalk-v15":
        _require_weights(models_dir)
    if requested != "auto":
        return
    if not _weights_missing(models_dir):
        env["MUSETALK_MODEL_PROFILE"] = "musetalk-v15"
        return
    logger.info("no MuseTalk weights in %s; trying python manage.py download_models", models_dir)
    result = _manage("download_models", env=env)
    if result.returncode == 0 and not _weights_missing(models_dir):
        env["MUSETALK_MODEL_PROFILE"] = "musetalk-v15"
        return
    reason = (result.stderr or result.stdout).strip().splitlines()
    logger.warning("download impossible: %s", reason[-1] if reason else "unknown error")
    env["MUSETALK_MODEL_PROFILE"] = "random-tiny"
    env["MUSETALK_DEMO_MODE"] = "1"
    bar = "!" * (len(DEMO_WARNING) + 8)
    logger.warning("\n%s\n!!! %s !!!\n%s", bar, DEMO_WARNING, bar)


def _config_from_env(env: dict[str, str]) -> StackConfig:
    return StackConfig(
        host=env.get("HOST", "127.0.0.1"),
        port=int(env.get("PORT", "8000")),
        redis_url=env.get("REDIS_URL") or None,
        var_dir=Path(env.get("VAR_DIR", str(BASE_DIR / "var"))),
        env=env,
        worker_processes=int(env.get("WORKER_PROCESSES", "1")),
        worker_threads=int(env.get("WORKER_THREADS", "4")),
        prepare_threads=int(env.get("PREPARE_WORKER_THREADS", "1")),
    )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "musetalk_site.settings")
    _setup_database(env)
    _resolve_profile(env)
    stack = Stack(_config_from_env(env))
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    code = 0
    try:
        stack.start(health_timeout=float(env.get("STARTUP_TIMEOUT", "300")))
        logger.info("MuseTalk is running: dashboard at %s/ (Ctrl-C to stop)", stack.base_url)
        while not stop.wait(1.0):
            dead = stack.dead_child()
            if dead is not None:
                logger.error("%s exited (code %s); stopping", dead.name, dead.process.returncode)
                code = 1
                break
    except RuntimeError as exc:
        logger.error("%s", exc)
        code = 1
    finally:
        logger.info("stopping web, worker and Redis")
        stack.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
