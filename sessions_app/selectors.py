"""Reads for streaming sessions: always scoped to one owner, or to one player token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.http import Http404
from django.utils import timezone

from inference.layout import chunk_number
from musetalk_site.auth import user_for_token
from musetalk_site.errors import NotAuthenticatedError
from sessions_app.models import StreamChunk, StreamRequest, StreamSession
from sessions_app.tokens import player_token_session_id


def session_list_for_user(*, user: User) -> QuerySet[StreamSession]:
    return StreamSession.objects.filter(owner=user).select_related("avatar")


def session_get_for_user(*, user: User, session_id: str) -> StreamSession:
    """The user's session; another user's session is simply not found."""
    session = session_list_for_user(user=user).filter(session_id=session_id).first()
    if session is None:
        raise Http404(f"Session {session_id!r} not found.")
    return session


def session_list_for_access(*, user: Any, token: str | None) -> QuerySet[StreamSession]:
    """The sessions the caller may read: its owner's (cookie, API token header or
    ``?token=<api key>``), or the one session of a player token. A caller with neither
    gets a 401 before anything is looked up."""
    if token and not user.is_authenticated:
        token_session = player_token_session_id(token=token)
        if token_session is not None:
            return StreamSession.objects.select_related("avatar").filter(session_id=token_session)
        user = user_for_token(token)
    if not user.is_authenticated:
        raise NotAuthenticatedError()
    return session_list_for_user(user=user)


def session_get_for_access(*, user: Any, token: str | None, session_id: str) -> StreamSession:
    """The session if the caller may read it; anyone else gets a 404 (or 401)."""
    sessions = session_list_for_access(user=user, token=token)
    session = sessions.filter(session_id=session_id).first()
    if session is None:
        raise Http404(f"Session {session_id!r} not found.")
    return session


def session_is_open(*, session: StreamSession) -> bool:
    """Open: active and not past its expiry (the maintenance may not have marked it yet)."""
    return session.status == StreamSession.Status.ACTIVE and session.expires_at > timezone.now()


def _open_or_404(session: StreamSession | None, session_id: str) -> StreamSession:
    if session is None or not session_is_open(session=session):
        raise Http404(f"Session {session_id!r} not found or expired.")
    return session


def session_get_open_for_user(*, user: User, session_id: str) -> StreamSession:
    """The user's open session; an ended or expired one is not found (the seed API's 404)."""
    return _open_or_404(
        session_list_for_user(user=user).filter(session_id=session_id).first(), session_id
    )


def session_get_open_for_access(*, user: Any, token: str | None, session_id: str) -> StreamSession:
    """:func:`session_get_for_access`, and not found once ended or expired."""
    sessions = session_list_for_access(user=user, token=token)
    return _open_or_404(sessions.filter(session_id=session_id).first(), session_id)


def session_open_list(*, user: User, kind: str | None = None) -> QuerySet[StreamSession]:
    """The open sessions of the user (staff: of everyone), oldest first, each annotated with
    ``active_stream``: the request id of its queued or streaming utterance, if any."""
    sessions = StreamSession.objects.select_related("avatar").filter(
        status=StreamSession.Status.ACTIVE, expires_at__gt=timezone.now()
    )
    if not user.is_staff:
        sessions = sessions.filter(owner=user)
    if kind is not None:
        sessions = sessions.filter(kind=kind)
    active = StreamRequest.objects.filter(
        session=OuterRef("pk"), status__in=StreamRequest.ACTIVE_STATUSES
    ).values("request_id")[:1]
    return sessions.annotate(active_stream=Subquery(active)).order_by("created_at", "pk")


def request_active(*, session: StreamSession) -> StreamRequest | None:
    """The utterance queued or streaming in ``session`` (at most one)."""
    return session.requests.filter(status__in=StreamRequest.ACTIVE_STATUSES).first()


def request_latest(*, session: StreamSession) -> StreamRequest | None:
    return session.requests.order_by("-queued_at", "-pk").first()


def request_get_in_session(*, session: StreamSession, request_id: str) -> StreamRequest | None:
    if "\x00" in request_id:  # no id holds one, and PostgreSQL refuses NUL in a query
        return None
    return session.requests.filter(request_id=request_id).first()


def chunk_list(*, request: StreamRequest) -> QuerySet[StreamChunk]:
    return request.chunks.order_by("index")


def chunk_get_for_access(
    *, user: Any, token: str | None, request_id: str, name: str
) -> tuple[Path, StreamSession]:
    """The file of chunk ``name`` of ``request_id`` (and its session) if the caller may
    read that session; a 404 otherwise.

    Access is settled before the request is looked up, and only among the caller's own
    sessions: a caller who may not read a session gets the same answer whether or not the
    request id exists, and never learns the session's id."""
    sessions = session_list_for_access(user=user, token=token)
    number = chunk_number(name)
    request = (
        StreamRequest.objects.filter(request_id=request_id, session__in=sessions)
        .select_related("session")
        .first()
    )
    if request is None or number is None:
        raise Http404("Chunk not found.")
    chunk = request.chunks.filter(index=number - 1).first()
    path = Path(settings.MEDIA_ROOT) / chunk.file if chunk is not None else None
    if path is None or not path.is_file():
        raise Http404("Chunk not found.")
    return path, request.session


def session_stats(*, user: User) -> dict[str, Any]:
    """Counts for the user's sessions; staff see every user's."""
    sessions = StreamSession.objects.all()
    if not user.is_staff:
        sessions = sessions.filter(owner=user)
    totals = sessions.aggregate(
        total_sessions=Count("pk"),
        active_sessions=Count("pk", filter=Q(status=StreamSession.Status.ACTIVE)),
        chunks_served=Sum("chunks_served"),
    )
    requests = StreamRequest.objects.filter(session__in=sessions)
    return {
        "scope": "all" if user.is_staff else "user",
        "active_sessions": totals["active_sessions"],
        "active_streams": requests.filter(status__in=StreamRequest.ACTIVE_STATUSES).count(),
        "total_sessions": totals["total_sessions"],
        "total_streams": requests.count(),
        "chunks_generated": StreamChunk.objects.filter(request__in=requests).count(),
        "chunks_served": totals["chunks_served"] or 0,
    }


def session_open_count_for_user(*, user: User) -> int:
    """The user's sessions that are open now (one past its expiry is not, even before the
    maintenance marks it expired)."""
    return StreamSession.objects.filter(
        owner=user, status=StreamSession.Status.ACTIVE, expires_at__gt=timezone.now()
    ).count()


def session_usage_for_user(*, user: User) -> dict[str, int]:
    """The sessions app's share of the user's quota usage (musetalk_site.quotas)."""
    return {"active_sessions": session_open_count_for_user(user=user)}


def session_minutes_list_for_user(*, user: User, limit: int = 50) -> QuerySet[StreamSession]:
    """The user's newest sessions, each with ``utterances`` and ``generated_seconds``."""
    return (
        StreamSession.objects.filter(owner=user)
        .select_related("avatar")
        .annotate(
            utterances=Count("requests"),
            generated_seconds=Sum("requests__generated_seconds", default=0.0),
        )
        .order_by("-created_at")[:limit]
    )
