"""HLS services: the session's timeline on disk, its playlist and segments, the idle cache.

On disk, under MEDIA_ROOT/hls/:

    avatars/<owner_id>/<avatar_id>/<stamp>/idle_000.mp4 ...   the idle loop cut into ~1 s
        parts (H.264 opening on a key frame + AAC silence), made once per idle.mp4
    avatars/<owner_id>/<avatar_id>/<stamp>/variant.json     what the multivariant playlist
        says of the stream, measured on those parts
    sessions/<session_id>/timeline.json                     the segments published so far
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from urllib.parse import quote

import av
from django.conf import settings
from django.http import Http404
from django.utils import timezone

from avatars.models import Avatar
from avatars.services.avatar import avatar_dir
from musetalk_site.errors import ApplicationError
from sessions_app.hls.media import idle_parts_encode, segment_ts, variant_measure
from sessions_app.hls.timeline import (
    LIVE,
    Clip,
    LiveRequest,
    Segment,
    Timeline,
    Variant,
    master_render,
    playlist_render,
    target_duration,
    timeline_extend,
    timeline_new,
    timeline_segment,
)
from sessions_app.models import StreamRequest, StreamSession
from sessions_app.services.session import AUDIO_TRACK
from sessions_app.tokens import player_token_make, player_token_session_id

logger = logging.getLogger(__name__)

PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"
CHUNK_NAME = re.compile(r"^chunk_(\d{4,})\.mp4$")
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
    shutil.rmtree(hls_root() / avatar.storage_key, ignore_errors=True)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` across threads and processes."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def idle_clips_ensure(*, avatar: Avatar) -> list[Clip]:
    """The idle parts of ``avatar``, encoded on first use (about a second per 100 frames)."""
    source = avatar_dir(avatar) / "idle.mp4"
    if not source.is_file():
        raise Http404("This avatar has no idle video.")
    stat = source.stat()
    home = hls_root() / avatar.storage_key
    folder = home / f"{stat.st_mtime_ns:x}-{stat.st_size:x}"
    with _locked(home):
        if not (folder / "parts.json").is_file():
            _idle_build(source, folder, home)
    return [Clip(**clip) for clip in json.loads((folder / "parts.json").read_text())]


def _idle_build(source: Path, folder: Path, home: Path) -> None:
    for stale in home.iterdir():
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)  # an earlier idle.mp4 (re-prepared)
    staging = home / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    clips = idle_parts_encode(source, staging, relative_to=staging)
    media_root = Path(settings.MEDIA_ROOT)
    clips = [
        Clip(str((folder / clip.source).relative_to(media_root)), clip.duration) for clip in clips
    ]
    (staging / "parts.json").write_text(json.dumps([asdict(clip) for clip in clips]))
    os.rename(staging, folder)


def idle_variant_ensure(*, avatar: Avatar) -> Variant:
    """The variant of ``avatar``'s stream, measured on its idle parts on first use."""
    clips = idle_clips_ensure(avatar=avatar)
    media_root = Path(settings.MEDIA_ROOT)
    folder = (media_root / clips[0].source).parent
    path = folder / "variant.json"
    with _locked(folder.parent):
        if not path.is_file():
            variant = variant_measure([(media_root / c.source, c.duration) for c in clips])
            path.write_text(json.dumps(asdict(variant)))
    return Variant(**json.loads(path.read_text()))


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
    """Bring the session's timeline up to ``now`` (epoch seconds) and store it."""
    now = time.time() if now is None else now
    idle = idle_clips_ensure(avatar=session.avatar)
    with _locked(hls_session_dir(session.session_id)):
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
    variant = idle_variant_ensure(avatar=session.avatar)
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
    match = CHUNK_NAME.match(source.name)
    track = source.with_name(AUDIO_TRACK)
    if segment.kind != LIVE or match is None or not track.is_file():
        return None
    chunk_frames = max(1, round(session.chunk_duration * session.fps))
    return track, (int(match.group(1)) - 1) * chunk_frames / session.fps


def hls_player_config(*, session: StreamSession, token: str | None) -> dict[str, str]:
    """What the player page needs: the multivariant playlist, whose URL carries a player
    token: the one the page was opened with, or a fresh one for the signed-in owner (never
    an API key). Encodes and measures the idle loop now if needed, so that the playlists
    answer quickly."""
    hls_session_check_open(session=session)
    if not token or player_token_session_id(token=token) != session.session_id:
        token = player_token_make(session_id=session.session_id)
    idle_variant_ensure(avatar=session.avatar)
    query = _token_query(token)
    return {
        "session_id": session.session_id,
        "playlist_url": f"/hls/{session.session_id}/master.m3u8{query}",
    }
