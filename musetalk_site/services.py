"""Platform-level writes: the worker round-trip probe."""

from __future__ import annotations

import json
import os
import time

from musetalk_site.redis_conn import redis_client

PING_PREFIX = "musetalk:ping:"


def ping_record(*, token: str) -> None:
    """Record that a worker processed ping ``token`` (read back by ``ping_result``)."""
    from musetalk_site.worker import engine_state

    payload = {"pid": os.getpid(), "at": time.time(), "engine": engine_state()}
    redis_client().set(PING_PREFIX + token, json.dumps(payload), ex=300)


def ping_result(*, token: str) -> dict | None:
    raw = redis_client().get(PING_PREFIX + token)
    return json.loads(raw) if raw else None


def live_worker_ids() -> set[str]:
    """Ids of workers whose heartbeat is fresh."""
    from django.conf import settings

    from musetalk_site.heartbeat import beats_read

    beats = beats_read(redis_client())
    return {b.worker_id for b in beats if b.age() <= settings.WORKER_STALE_SECONDS}


def orphans_reap() -> int:
    """Fail the work claimed by workers that died (no fresh heartbeat) and expire idle
    sessions; returns how many rows changed.

    A killed worker never leaves an avatar ``preparing``, a job ``running`` or a stream
    ``streaming`` forever.
    """
    from avatars.services.avatar import avatar_orphans_reap
    from avatars.services.job import job_orphans_reap
    from sessions_app.services import sessions_expire, stream_orphans_reap

    live = live_worker_ids()
    return (
        avatar_orphans_reap(live_worker_ids=live)
        + job_orphans_reap(live_worker_ids=live)
        + stream_orphans_reap(live_worker_ids=live)
        + sessions_expire()
    )
