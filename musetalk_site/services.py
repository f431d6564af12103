"""Platform-level writes: the worker round-trip probe."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from musetalk_site.engine import engine_state
from musetalk_site.redis_conn import redis_client

PING_PREFIX = "musetalk:ping:"


def ping_record(*, token: str) -> None:
    """Record that a worker processed ping ``token`` (read back by ``ping_result``)."""
    payload = {"pid": os.getpid(), "at": time.time(), "engine": engine_state()}
    redis_client().set(PING_PREFIX + token, json.dumps(payload), ex=300)


def ping_result(*, token: str) -> dict[str, Any] | None:
    raw = redis_client().get(PING_PREFIX + token)
    return json.loads(raw) if raw else None
