"""Avatars in the generation workers' caches: warm (optionally waiting until loaded), evict.

Each generating worker process has a cache of its own (the seed's "this worker's cache"), so
a warm or evict command goes to every live generating worker, through each one's own queue
(:mod:`musetalk_site.placement`); when none is live it goes to the shared ``generate`` queue,
where the first worker to come up takes it. A worker that starts later starts cold: it loads
an avatar on first use.

A warm request may ask to hear back: each worker pushes its outcome onto a Redis list named in
the message, and the reply key says how many outcomes to expect. :func:`avatar_cache_warm_wait`
blocks (for a bounded time) until every worker answered: "ready" when all loaded it,
"failed" as soon as one could not; when some did not answer in time it returns None, as when
none did (the API then answers 202, "queued").
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
from musetalk_site.broker import message_send
from musetalk_site.engine import current_worker_id, get_engine
from musetalk_site.errors import ApplicationError
from musetalk_site.placement import cache_worker_queues
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
    """Ask every live generation worker to load the avatar into its cache; returns the
    reply key that :func:`avatar_cache_warm_wait` reads the outcomes from."""
    from avatars.tasks import avatar_cache_warm as warm

    _require_assets(avatar)
    queues: list[str | None] = list(cache_worker_queues()) or [None]
    reply_key = f"{WARM_REPLY_PREFIX}{secrets.token_hex(8)}:{len(queues)}"
    for queue in queues:
        message_send(warm, str(avatar_dir(avatar)), reply_key, queue_name=queue)
    return reply_key


def _expected_replies(reply_key: str) -> int:
    try:
        return max(1, int(reply_key.rsplit(":", 1)[1]))
    except (IndexError, ValueError):
        return 1


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
    """The workers' outcome at ``reply_key``: ``{"status": "ready"|"failed", "workers":
    [...], ...}`` once all of them answered (or one failed), else None after
    ``timeout_seconds``."""
    client = redis_client()
    expected = _expected_replies(reply_key)
    deadline = time.monotonic() + max(0.0, timeout_seconds)
    replies: list[dict[str, Any]] = []
    while len(replies) < expected:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        # BLPOP takes whole seconds; 0 would block forever.
        item = client.blpop([reply_key], timeout=max(1, min(_BLOCK_SECONDS, int(left))))
        if item is None:
            continue
        _, raw = cast("tuple[bytes, bytes]", item)
        replies.append(cast("dict[str, Any]", json.loads(raw)))
        if replies[-1].get("status") != "ready":
            return {**replies[-1], "workers": replies}
    return {**replies[0], "status": "ready", "workers": replies}


def avatar_cache_clear(*, avatar: Avatar) -> None:
    """Ask every generation worker to drop the avatar from its cache; its files and row stay."""
    avatar_cache_folder_evict(folder=str(avatar_dir(avatar)))


def avatar_cache_folder_evict(*, folder: str) -> int:
    """Ask every live generation worker to drop ``folder`` from its cache (also when the
    avatar's row is gone); returns how many queues the command went to."""
    from avatars.tasks import avatar_cache_evict

    queues: list[str | None] = list(cache_worker_queues()) or [None]
    for queue in queues:
        message_send(avatar_cache_evict, folder, queue_name=queue)
    return len(queues)


def avatar_cache_evict_run(*, folder: str) -> bool:
    """Drop ``folder`` from this worker's cache (worker); whether it was there."""
    return bool(get_engine().evict(Path(folder)))
