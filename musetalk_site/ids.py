"""Identifiers the API hands out."""

from __future__ import annotations

import secrets


def new_request_id(avatar_id: str) -> str:
    """``<avatar_id>_req_<8 hex>``: the seed's request id of a video or an utterance."""
    return f"{avatar_id}_req_{secrets.token_hex(4)}"
