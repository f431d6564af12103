"""HLS services: the session's timeline on disk, its playlist and segments.

On disk, under MEDIA_ROOT/hls/:

    avatars/<owner_id>/<avatar_id>/...      the idle parts, built by the worker (idle.py)
    sessions/<session_id>/timeline.json     the segments published so far

The playlists and segments only read the idle parts: before the worker has built them, a
playlist answers 503 with Retry-After, which players retry.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import av
from django.conf import settings
from django.http import Http404
from django.utils import timezone

from avatars.models import Avatar
from inference.layout import AUDIO_TRACK, chunk_number
from musetalk_site.errors import ApplicationError
from sessions_app.hls.idle import dir_locked, hls_idle_clips, hls_idle_home, hls_idle_variant
from sessions_app.hls.media import segment_ts
from sessions_app.hls.timeline import (
    LIVE,
    Clip,
    LiveRequest,
    Segment,
    Timeline,
    master_render,
    playlist_render,
    target_duration,
    timeline_extend,
    timeline_new,
    timeline_segment,
)
from sessions_app.models import StreamRequest, StreamSession
from sessions_app.tokens import player_token_make, player_token_session_id

logger = logging.getLogger(__name__)

PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_CONTENT_TYPE = "video/mp2t"


def hls_root() -> Path:
    return Path(settings.MEDIA_ROOT) / "hls"


def hls_session_dir(session_id: str) -> Path:
    return hls_root() / "sessions" / session_id


def hls_session_files_remove(*, session_id: str) -> None:
    """Delete the session's HLS files (the session delete service calls this)."""
    shutil.rmtree(hls_session_dir(session_id), ignore_errors=True)


def hls_avatar_files_remove(*, avatar: Avatar) -> None:
    """Delete the cached idle segments of ``avatar`` (for the avatar delete service)."""
    shutil.rmtree(hls_idle_home(avatar), ignore_errors=True)


def hls_session_check_open(*, session: StreamSession) -> None:
    """410 for an ended or expired session, whose HLS files go at the same time."""
    closed = session.status != StreamSession.Status.ACTIVE
    if closed or session.expires_at <= timezone.now():
        hls_session_files_remove(session_id=session.session_id)
        raise ApplicationError(
            f"Session {session.session_id} has ended.",
            {"session_id": session.session_id, "status": session.status},
            status=410,
        )


def _live_requests(session: StreamSession, done_pk: int) -> list[LiveRequest]:
    requests = session.requests.filter(pk__gt=done_pk).order_by("pk").prefetch_related("chunks")
    return [
        LiveRequest(
            pk=request.pk,
            # Rows appear in index order, once their file is complete.
            chunks=[Clip(chunk.file, chunk.duration) for chunk in request.chunks.all()],
            finished=request.status not in StreamRequest.ACTIVE_STATUSES,
            cut=request.status == StreamRequest.Status.INTERRUPTED,
        )
        for request in requests
    ]


def _session_target(session: StreamSession, idle: list[Clip]) -> int:
    chunk_frames = max(1, round(session.chunk_duration * session.fps))
    return target_duration([clip.duration for clip in idle] + [chunk_frames / session.fps])


def _history_pk(session: StreamSession) -> int:
    """Utterances that finished before the playlist existed are not played."""
    finished = session.requests.exclude(status__in=StreamRequest.ACTIVE_STATUSES)
    return max(finished.values_list("pk", flat=True), default=0)


def _timeline_load(session: StreamSession) -> Timeline | None:
    path = hls_session_dir(session.session_id) / "timeline.json"
    if not path.is_file():
        return None
    return Timeline.from_dict(json.loads(path.read_text()))


def _timeline_save(session: StreamSession, timeline: Timeline) -> None:
    path = hls_session_dir(session.session_id) / "timeline.json"
    partial = path.with_name(f".timeline.{uuid.uuid4().hex[:8]}.json")
    partial.write_text(json.dumps(timeline.to_dict()))
    os.replace(partial, path)  # segment requests read it without the lock


def hls_timeline_update(*, session: StreamSession, now: float | None = None) -> Timeline:
    """Bring the session's timeline up to ``now`` (epoch seconds) and store it; 503 until
    the worker has built the avatar's idle parts."""
    now = time.time() if now is None else now
    idle = hls_idle_clips(avatar=session.avatar)
    with dir_locked(hls_session_dir(session.session_id)):
        timeline = _timeline_load(session)
        if timeline is None:
            target = _session_target(session, idle)
            timeline = timeline_new(target=target, now=now, done_pk=_history_pk(session), idle=idle)
        timeline_extend(
            timeline, now=now, idle=idle, live=_live_requests(session, timeline.done_pk)
        )
        _timeline_save(session, timeline)
    if not StreamSession.objects.filter(pk=session.pk, status=StreamSession.Status.ACTIVE).exists():
        hls_session_files_remove(session_id=session.session_id)  # it closed meanwhile
    return timeline


def _token_query(token: str | None) -> str:
    return "?token=" + quote(token, safe=":") if token else ""


def hls_playlist(*, session: StreamSession, token: str | None) -> str:
    """The session's live playlist; segment URLs carry ``token``."""
    hls_session_check_open(session=session)
    timeline = hls_timeline_update(session=session)
    query = _token_query(token)
    prefix = f"/hls/{session.session_id}/"
    return playlist_render(timeline, segment_url=lambda segment: prefix + segment.name + query)


def hls_master_playlist(*, session: StreamSession, token: str | None) -> str:
    """The session's multivariant playlist: its one variant is the live playlist."""
    hls_session_check_open(session=session)
    variant = hls_idle_variant(avatar=session.avatar)
    uri = f"/hls/{session.session_id}/playlist.m3u8{_token_query(token)}"
    return master_render(variant, uri=uri)


def hls_segment(*, session: StreamSession, name: str) -> tuple[bytes, Segment]:
    """The MPEG-TS bytes of segment ``name``; 404 once it left the timeline."""
    hls_session_check_open(session=session)
    timeline = _timeline_load(session)
    segment = timeline_segment(timeline, name) if timeline is not None else None
    source = Path(settings.MEDIA_ROOT) / segment.source if segment is not None else None
    if segment is None or source is None or not source.is_file():
        raise Http404("Segment not found.")
    try:
        data = segment_ts(
            source,
            start=segment.start,
            duration=segment.duration,
            audio=_utterance_audio(session, segment, source),
        )
    except (OSError, av.FFmpegError) as exc:
        logger.info("could not remux %s: %s", source, exc)  # removed while we read it
        raise Http404("Segment not found.") from None
    return data, segment


def _utterance_audio(
    session: StreamSession, segment: Segment, source: Path
) -> tuple[Path, float] | None:
    """For a live segment: the utterance's continuous audio track and where the chunk
    starts in it (chunk k of F frames starts at (k - 1) * F / fps), when the track exists."""
    number = chunk_number(source.name)
    track = source.with_name(AUDIO_TRACK)
    if segment.kind != LIVE or number is None or not track.is_file():
        return None
    chunk_frames = max(1, round(session.chunk_duration * session.fps))
    return track, (number - 1) * chunk_frames / session.fps


def hls_player_config(*, session: StreamSession, token: str | None) -> dict[str, str]:
    """What the player page needs: the multivariant playlist, whose URL carries a player
    token: the one the page was opened with, or a fresh one for the signed-in owner (never
    an API key). Until the worker has built the idle parts the playlists answer 503, which
    the player retries."""
    hls_session_check_open(session=session)
    if not token or player_token_session_id(token=token) != session.session_id:
        token = player_token_make(session_id=session.session_id)
    query = _token_query(token)
    return {
        "session_id": session.session_id,
        "playlist_url": f"/hls/{session.session_id}/master.m3u8{query}",
    }
