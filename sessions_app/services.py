"""Writes for streaming sessions."""

from __future__ import annotations

from django.utils import timezone

from musetalk_site.errors import ApplicationError
from sessions_app.models import StreamRequest, StreamSession


def session_end(*, session: StreamSession) -> StreamSession:
    """End an active session; an utterance still streaming is marked interrupted."""
    now = timezone.now()
    ended = StreamSession.objects.filter(pk=session.pk, status=StreamSession.Status.ACTIVE).update(
        status=StreamSession.Status.ENDED, ended_at=now
    )
    if not ended:
        session.refresh_from_db()
        raise ApplicationError(
            f"Session {session.session_id} is already {session.status}.",
            {"session_id": session.session_id, "status": session.status},
            status=409,
        )
    StreamRequest.objects.filter(
        session=session, status__in=[StreamRequest.Status.QUEUED, StreamRequest.Status.STREAMING]
    ).update(status=StreamRequest.Status.INTERRUPTED, finished_at=now)
    session.refresh_from_db()
    return session
