"""``POST /generate/stream`` (the seed API's): one utterance whose chunk events are the answer.

The request opens a streaming session of its own for the caller, streams the audio in it as
any session utterance (the same worker task, chunks and event store), and the answer follows
that session's events, told as the seed tells them (``seed_event``): ``chunk`` events, then
``complete`` or ``error``, which ends the answer. The chunks stay fetchable for
``CHUNKS_KEPT_SECONDS`` after that; then the session expires like any idle one, and its files
go with it. A caller that hangs up before the end stops the utterance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from musetalk_site.errors import ApplicationError
from sessions_app.feeds import ChunkLinks
from sessions_app.models import StreamRequest, StreamSession
from sessions_app.services import (
    session_create,
    session_delete,
    session_interrupt,
    session_stream_start,
)

logger = logging.getLogger(__name__)

SESSION_LABEL = "generate/stream"  # the session's user_id: how its owner recognises it
# Long enough for a player that fetches each chunk as it is announced, and for a person to
# follow the chunk links of a page that lists them; short, because the session counts as
# open (QUOTA_MAX_ACTIVE_SESSIONS) until it expires.
CHUNKS_KEPT_SECONDS = 600
SEED_EVENTS_THAT_END = {"complete", "error"}


@dataclass(frozen=True)
class GeneratedStream:
    session: StreamSession
    request: StreamRequest


def generate_stream_start(
    *,
    owner: User,
    avatar_id: str,
    audio: UploadedFile,
    batch_size: int,
    fps: int,
    chunk_duration: float,
) -> GeneratedStream:
    """Open the caller's session on ``avatar_id`` and queue ``audio`` in it; a refused
    upload (type, length, quota) leaves no session open."""
    session = session_create(
        owner=owner,
        avatar_id=avatar_id,
        user_id=SESSION_LABEL,
        batch_size=batch_size,
        fps=fps,
        chunk_duration=chunk_duration,
    )
    try:
        request = session_stream_start(session=session, audio=audio)
    except BaseException:
        session_delete(session=session)
        raise
    return GeneratedStream(session=session, request=request)


def generate_stream_finish(*, session_pk: int) -> None:
    """The answer is over (or its caller went away): stop the utterance if it is still
    under way, and let the session expire CHUNKS_KEPT_SECONDS from now (sooner if due)."""
    session = StreamSession.objects.filter(pk=session_pk).first()
    if session is None or session.status != StreamSession.Status.ACTIVE:
        return
    kept_seconds = min(CHUNKS_KEPT_SECONDS, settings.SESSION_TTL_SECONDS)
    kept = timezone.now() + timedelta(seconds=kept_seconds)
    with transaction.atomic():  # seen together: stopped, and due to expire
        if session.requests.filter(status__in=StreamRequest.ACTIVE_STATUSES).exists():
            try:
                session_interrupt(session=session)
            except ApplicationError:
                return  # expired meanwhile: closed with its files already
        StreamSession.objects.filter(
            pk=session_pk, status=StreamSession.Status.ACTIVE, expires_at__gt=kept
        ).update(expires_at=kept)


def seed_event(payload: dict[str, Any], *, session_id: str) -> dict[str, Any] | None:
    """The event of the answer for one event of the session, as the seed writes it; None
    for the session's own events that the seed's answer does not have."""
    name = payload.get("event")
    if name == "chunk":  # its page fetches the url with no credentials: a token on it
        return ChunkLinks(session_id, mint=True).event(payload)
    if name == "complete":
        return payload
    if name == "error":
        return {"event": "error", "message": payload.get("message", ""), **_ids(payload)}
    if name == "interrupted":
        return {"event": "error", "message": "The utterance was interrupted.", **_ids(payload)}
    if name == "session_ended":
        reason = payload.get("reason", "ended")
        return {"event": "error", "message": f"The stream's session {reason}."}
    return None


def _ids(payload: dict[str, Any]) -> dict[str, Any]:
    return {"request_id": payload["request_id"]} if "request_id" in payload else {}
