from __future__ import annotations

import dramatiq

from musetalk_site import services


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=30_000)
def platform_ping(token: str) -> None:
    """Round trip through the broker and a worker; used by checks and tests."""
    services.ping_record(token=token)
