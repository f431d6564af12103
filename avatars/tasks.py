"""Avatar and video actors. Preparation and generation use separate queues (and worker
processes), so a long preparation never delays a video.

The cache actors are declared on the shared ``generate`` queue, but their messages normally go
to each generating worker's own queue (``avatars.services.cache``), so every cache hears them.
"""

from __future__ import annotations

import dramatiq

from avatars import services

PREPARE_QUEUE = "prepare"
GENERATE_QUEUE = "generate"


@dramatiq.actor(queue_name=PREPARE_QUEUE, max_retries=0, time_limit=3 * 60 * 60 * 1000)
def avatar_prepare(avatar_pk: int, revision: int) -> None:
    """Prepare one avatar revision in this worker's resident engine."""
    services.avatar_prepare_run(avatar_pk=avatar_pk, revision=revision)


@dramatiq.actor(queue_name=GENERATE_QUEUE, max_retries=0, time_limit=2 * 60 * 60 * 1000)
def job_generate(job_pk: int) -> None:
    """Generate one video in this worker's resident engine."""
    services.job_run(job_pk=job_pk)


@dramatiq.actor(queue_name=GENERATE_QUEUE, max_retries=0, time_limit=10 * 60 * 1000)
def avatar_cache_warm(avatar_dir: str, reply_key: str = "") -> None:
    """Load a prepared avatar into this worker's cache (and say so at ``reply_key``); sent
    to every generating worker's own queue."""
    services.avatar_cache_warm_run(folder=avatar_dir, reply_key=reply_key)


@dramatiq.actor(queue_name=GENERATE_QUEUE, max_retries=0, time_limit=60 * 1000)
def avatar_cache_evict(avatar_dir: str) -> None:
    """Drop a prepared avatar from this worker's cache; sent to every generating worker's
    own queue."""
    services.avatar_cache_evict_run(folder=avatar_dir)
