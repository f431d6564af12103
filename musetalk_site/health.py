"""Health of the platform's parts: database, Redis, worker heartbeat, engine profile.

The report carries the seed API's keys beside ours (``ok``, ``service``, ``status``:
``"healthy"``, ``gpu_available``, ``cached_avatars``, ``active_requests``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

from inference.profiles import DEMO_WARNING
from musetalk_site.anonymous import anonymous_access_warning
from musetalk_site.engine_stats import workload
from musetalk_site.heartbeat import WorkerBeat, beats_read
from musetalk_site.redis_conn import redis_client

logger = logging.getLogger(__name__)

DEMO_BANNER = DEMO_WARNING  # the launcher, the worker's log, /health and the banner say the same
SERVICE = "musetalk"


@dataclass
class Check:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "down"
        return Check(False, {"error": str(exc)})
    return Check(True, {"vendor": connection.vendor})


def check_redis() -> Check:
    try:
        started = time.perf_counter()
        redis_client().ping()
    except Exception as exc:
        return Check(False, {"error": str(exc)})
    return Check(True, {"latency_ms": round((time.perf_counter() - started) * 1000, 2)})


# Every queue the platform sends to needs at least one live worker.
REQUIRED_QUEUES = ("default", "generate", "stream", "prepare")


def _worker_detail(beat: WorkerBeat, now: float) -> dict[str, Any]:
    return {
        "worker_id": beat.worker_id,
        "queues": beat.queues,
        "age_seconds": round(beat.age(now), 1),
        "stale": beat.age(now) > settings.WORKER_STALE_SECONDS,
        "engine": beat.engine,
        "running": beat.running,
    }


def _uncovered_queues(fresh: list[dict[str, Any]]) -> list[str]:
    served: set[str] = set()
    for worker in fresh:
        served.update(worker["queues"] or ["*"])
    if "*" in served:
        return []
    return [queue for queue in REQUIRED_QUEUES if queue not in served]


def check_worker(redis_ok: bool) -> Check:
    if not redis_ok:
        return Check(False, {"error": "redis is down; worker heartbeats cannot be read"})
    try:
        beats = beats_read(redis_client())
    except Exception as exc:
        return Check(False, {"error": str(exc)})
    if not beats:
        return Check(False, {"error": "no worker heartbeat: is the worker running?", "workers": []})
    now = time.time()
    workers = [_worker_detail(beat, now) for beat in beats]
    fresh = [worker for worker in workers if not worker["stale"]]
    ready = [worker for worker in fresh if worker["engine"].get("loaded")]
    detail: dict[str, Any] = {"workers": workers, "age_seconds": workers[0]["age_seconds"]}
    if not fresh:
        detail["error"] = (
            f"worker heartbeat is stale ({workers[0]['age_seconds']} s old, "
            f"limit {settings.WORKER_STALE_SECONDS:g} s)"
        )
        return Check(False, detail)
    uncovered = _uncovered_queues(ready)
    if uncovered:
        loading = [w["worker_id"] for w in fresh if w not in ready]
        detail["error"] = (
            f"no live worker with a loaded engine for queue(s): {', '.join(uncovered)}"
        )
        failed = [w["engine"]["error"] for w in fresh if w["engine"].get("error")]
        if failed:
            detail["error"] += f"; engine failed to load: {failed[0]}"
        elif loading:
            detail["error"] += f" ({len(loading)} worker(s) still loading the engine)"
    return Check(not uncovered, detail)


def live_workers(worker: Check) -> list[dict[str, Any]]:
    """The fresh workers whose engine is loaded, freshest first."""
    workers = worker.detail.get("workers", [])
    return [item for item in workers if not item["stale"] and item["engine"].get("loaded")]


def _generates(item: dict[str, Any]) -> bool:
    queues = item["queues"] or ["*"]
    return "*" in queues or "generate" in queues


def engine_state(worker: Check) -> dict[str, Any]:
    """What the freshest live worker that generates loaded (profile, device, backends, demo
    flag, its cache and budget); a worker that only prepares avatars caches none, so it is
    taken only when no other is live."""
    live = live_workers(worker)
    for item in [item for item in live if _generates(item)] + live:
        return dict(item["engine"])
    return {
        "profile": None,
        "requested_profile": settings.MUSETALK_MODEL_PROFILE,
        "demo": settings.MUSETALK_DEMO_MODE,
    }


def health_report() -> tuple[bool, dict[str, Any]]:
    database = check_database()
    redis_check = check_redis()
    worker = check_worker(redis_check.ok)
    engine = engine_state(worker)
    checks = {"database": database, "redis": redis_check, "worker": worker}
    down = [name for name, check in checks.items() if not check.ok]
    report: dict[str, Any] = {
        "ok": not down,
        "service": SERVICE,
        "status": "healthy" if not down else "unhealthy",
        "down": down,
        "checks": {name: {"ok": c.ok, **c.detail} for name, c in checks.items()},
        "engine": engine,
        **workload(live_workers(worker), engine),
        "anonymous_access": _anonymous_access(),
    }
    if engine.get("demo"):
        report["demo_mode"] = True
        report["warning"] = DEMO_BANNER
    return not down, report


def _anonymous_access() -> dict[str, Any]:
    user = settings.ANONYMOUS_ACCESS_USER
    if not user:
        return {"enabled": False}
    return {"enabled": True, "user": user, "warning": anonymous_access_warning()}


def engine_banner() -> str:
    """The dashboard banner text when the engine runs on random weights, else ''."""
    if settings.MUSETALK_DEMO_MODE:
        return DEMO_BANNER
    try:
        engine = engine_state(check_worker(True))
    except Exception:
        logger.debug("engine state unavailable for the banner", exc_info=True)
        return ""
    return DEMO_BANNER if engine.get("demo") else ""


def capabilities() -> dict[str, Any]:
    """The seed API's feature flags (its pose, WebRTC-sync and local TTS features are not
    offered here), and ours."""
    return {
        "service": SERVICE,
        "features": {
            "pose_sets_v1": False,
            "pose_plans_v2": False,
            "timestamp_locked_av_sync": False,
            "local_kokoro_tts": False,
            "sse_chunks": True,
            "hls_sessions": True,
            "websocket_events": True,
            "anonymous_access": bool(settings.ANONYMOUS_ACCESS_USER),
        },
    }
