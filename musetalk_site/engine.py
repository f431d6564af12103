"""This worker process's resident engine, as the apps reach it: no torch is imported here.

The worker middleware (``musetalk_site.worker``) builds the engine after the process boots
and installs it with :func:`engine_install`; actors and services take it from
:func:`get_engine`. The web process imports this module too and never installs anything.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from inference.pipeline import Engine

LOAD_TIMEOUT_SECONDS = 600


@dataclass
class _Holder:
    """What this process loaded; one per process."""

    state: dict[str, Any] = field(default_factory=dict)
    engine: Engine | None = None
    ready: threading.Event = field(default_factory=threading.Event)


_holder = _Holder()


def engine_loading(state: dict[str, Any]) -> None:
    """Say that the engine is being built (actors wait for it in ``get_engine``)."""
    _holder.ready.clear()
    _holder.state = dict(state)


def engine_install(engine: Engine | None, state: dict[str, Any]) -> None:
    """Install the built engine (or None with ``state["error"]`` when it failed to load)."""
    _holder.engine = engine
    _holder.state = dict(state)
    _holder.ready.set()


def get_engine() -> Engine:
    """The resident engine of this worker process (built once at boot)."""
    if not _holder.ready.wait(timeout=LOAD_TIMEOUT_SECONDS):
        raise RuntimeError("the engine did not finish loading")
    if _holder.engine is None:
        raise RuntimeError(_holder.state.get("error", "the engine is not loaded"))
    return _holder.engine


def installed_engine() -> Engine | None:
    """The engine if it has loaded (None while loading or after a failure); never waits."""
    return _holder.engine


def engine_state() -> dict[str, Any]:
    """What the engine says of itself now (models, cache, budget), as published with each
    heartbeat: read from the engine every time, never the copy taken when it loaded."""
    engine = _holder.engine
    if engine is None:
        return dict(_holder.state)
    state = {**_holder.state, **engine.describe()}
    _add_entry_ages(state.get("cache", {}).get("entries", {}), now=time.monotonic())
    return state


def _add_entry_ages(entries: dict[str, dict[str, Any]], *, now: float) -> None:
    """Seconds since each cache entry was loaded and last used: the cache's times are this
    process's monotonic clock, which means nothing to another process."""
    for info in entries.values():
        info["age_seconds"] = round(max(0.0, now - info.get("loaded_at", now)), 1)
        info["idle_seconds"] = round(max(0.0, now - info.get("last_access", now)), 1)


def requested_state() -> dict[str, Any]:
    """What the settings ask of the engine (part of its state even when it failed to load)."""
    return {
        "requested_profile": settings.MUSETALK_MODEL_PROFILE,
        "demo": settings.MUSETALK_DEMO_MODE,
        "models_dir": str(settings.MODELS_DIR),
    }


def current_worker_id() -> str:
    """This worker process's id, as written in its heartbeat and on the rows it claims."""
    return f"{socket.gethostname()}-{os.getpid()}"
