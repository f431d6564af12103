"""Avatars in the generation workers' caches: warm (optionally waiting until loaded), evict.

A worker's cache is its own (the seed's "this worker's cache"): a warm or evict message goes
to one generation worker. A warm request may ask to hear back: the worker pushes the outcome
onto a Redis list named in the message, on which the web request blocks for a bounded time.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any, cast

from avatars.models import Avatar
from avatars.services.avatar import avatar_dir
from musetalk_site.engine import current_worker_id, get_engine
from musetalk_site.errors import ApplicationError
from musetalk_site.redis_conn import redis_client

logger = logging.getLogger(__name__)

WARM_REPLY_PREFIX = "musetalk:avatar-warm:"
WARM_REPLY_TTL_SECONDS = 600
# One blocking read at most this long: the Redis client's socket timeout is longer.
_BLOCK_SECONDS = 1


def _require_assets(avatar: Avatar) -> None:
    if not (avatar.status == Avatar.Status.READY or avatar.has_assets):
        raise ApplicationError(
            f"Avatar {avatar.avatar_id!r} is not ready (status: {avatar.status}).",
            {"avatar_id": avatar.avatar_id, "status": avatar.status},
            status=409,
        )
    if not avatar_files_present(avatar):
        raise ApplicationError(
            f"The prepared files of avatar {avatar.avatar_id!r} are missing; prepare it again.",
            {"avatar_id": avatar.avatar_id, "recreate_required": True},
            status=409,
        )


def avatar_files_present(avatar: Avatar) -> bool:
    """Whether the avatar's prepared folder is complete on disk (it has its manifest)."""
    return (avatar_dir(avatar) / "manifest.json").is_file()


def avatar_cache_warm(*, avatar: Avatar) -> str:
    """Ask a generation worker to load the avatar into its cache; returns the reply key
    that :func:`avatar_cache_warm_wait` reads the outcome from."""
    from avatars.tasks import avatar_cache_warm as warm

    _require_assets(avatar)
    reply_key = WARM_REPLY_PREFIX + secrets.token_hex(8)
    warm.send(str(avatar_dir(avatar)), reply_key)
    return reply_key


def avatar_cache_warm_run(*, folder: str, reply_key: str = "") -> None:
    """Load ``folder`` into this worker's cache; push the outcome to ``reply_key`` (worker)."""
    outcome: dict[str, Any] = {"status": "ready", "worker_id": current_worker_id()}
    try:
        get_engine().warm(folder)
    except Exception as exc:  # the one boundary: the client hears of it instead of waiting
        logger.warning("warming %s failed: %s", folder, exc)
        outcome = {**outcome, "status": "failed", "error": str(exc) or type(exc).__name__}
    if reply_key.startswith(WARM_REPLY_PREFIX):
        client = redis_client()
        client.rpush(reply_key, json.dumps(outcome))
        client.expire(reply_key, WARM_REPLY_TTL_SECONDS)


def avatar_cache_warm_wait(*, reply_key: str, timeout_seconds: float) -> dict[str, Any] | None:
    """The outcome a worker pushed to ``reply_key`` (``{"status": "ready"|"failed", ...}``),
    or None when none came within ``timeout_seconds``."""
    client = redis_client()
    deadline = time.monotonic() + max(0.0, timeout_seconds)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        # BLPOP takes whole seconds; 0 would block forever.
        item = client.blpop([reply_key], timeout=max(1, min(_BLOCK_SECONDS, int(left))))
        if item is not None:
            _, raw = cast("tuple[bytes, bytes]", item)
            return cast("dict[str, Any]", json.loads(raw))


def avatar_cache_clear(*, avatar: Avatar) -> None:
    """Ask a generation worker to drop the avatar from its cache; its files and row stay."""
    from avatars.tasks import avatar_cache_evict

    avatar_cache_evict.send(str(avatar_dir(avatar)))


def avatar_cache_evict_run(*, folder: str) -> bool:
    """Drop ``folder`` from this worker's cache (worker); whether it was there."""
    return bool(get_engine().evict(Path(folder)))
