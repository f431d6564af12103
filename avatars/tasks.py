from __future__ import annotations

import dramatiq

from avatars import services


@dramatiq.actor(queue_name="prepare", max_retries=0, time_limit=3 * 60 * 60 * 1000)
def avatar_prepare(avatar_pk: int, revision: int) -> None:
    """Prepare one avatar revision in this worker's resident engine."""
    services.avatar_prepare_run(avatar_pk=avatar_pk, revision=revision)
