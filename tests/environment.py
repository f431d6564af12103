"""Loaded with ``-p tests.environment`` before pytest-django configures Django.

The environment set here is what the settings read, and what the worker and web
processes of the end-to-end suite inherit: an isolated var/ dir, our own Redis port,
the tiny random model profile and no network.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from musetalk_site.stack import free_port

_VAR_DIR = Path(tempfile.mkdtemp(prefix="musetalk-test-"))
os.environ.update(
    {
        "VAR_DIR": str(_VAR_DIR),
        "MEDIA_ROOT": str(_VAR_DIR / "media"),
        "MODELS_DIR": str(_VAR_DIR / "models"),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MUSETALK_MODEL_PROFILE": "random-tiny",
        "MUSETALK_DEVICE": "cpu",
        "WORKER_HEARTBEAT_SECONDS": "1",
        "WORKER_STALE_SECONDS": "8",
        "WORKER_MAINTENANCE_SECONDS": "5",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # Live admission is off except in its own tests (which switch it on): a test stack's
        # capacity, measured on a busy CPU, would otherwise refuse other tests' sessions.
        "LIVE_ADMISSION": "0",
        # Frame repetition is off too (its own tests switch it on): a stream that repeats
        # frames on a busy CPU finishes sooner, which races tests that stop it midway.
        "LIVE_DEGRADE": "0",
    }
)
for name in ("SECRET_KEY", "SECRET_KEY_FILE", "MUSETALK_DEMO_MODE"):
    os.environ.pop(name, None)


def pytest_unconfigure(config: object) -> None:
    if os.environ.get("MUSETALK_KEEP_TEST_VAR") != "1":
        import shutil

        shutil.rmtree(_VAR_DIR, ignore_errors=True)
