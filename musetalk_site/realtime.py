"""Pushing events to pages and apps through the channel layer.

Workers and services reach clients only through these helpers. Every group name is
built by ``group_name`` so producers and consumers always agree.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


def group_name(kind: str, *parts: object) -> str:
    """``avatar.12.my_avatar`` style names; channel layers allow [a-zA-Z0-9_.-]."""
    safe = [str(part).replace(":", "_") for part in parts]
    return ".".join([kind, *safe])[:99]


def avatar_group(owner_id: int, avatar_id: str) -> str:
    return group_name("avatar", owner_id, avatar_id)


def job_group(owner_id: int, request_id: str) -> str:
    return group_name("job", owner_id, request_id)


def publish(group: str, event: dict[str, Any]) -> None:
    """Send ``event`` (a JSON-able dict with an ``event`` key) to every follower of ``group``.

    Delivery is best effort: the row in the database stays the source of truth, and
    followers read it when they (re)connect.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": "progress.event", "payload": event})
    except Exception:
        logger.warning("could not publish %s to %s", event.get("event"), group, exc_info=True)
