"""The seed API's HLS sessions, as a thin layer over our sessions.

A seed HLS session is one of our sessions (kind ``hls``). Its player shows two playlists:

    index.m3u8   the avatar's idle loop as a VOD playlist, which the player loops
    live.m3u8    the current utterance as an EVENT playlist, ending with #EXT-X-ENDLIST

and polls ``status`` to know which to show. The segments are what our own HLS serves: the
idle parts, and the utterance's chunks, each remuxed to MPEG-TS on request (the chunks of
one utterance on one media timeline, their audio cut from its continuous track).

An utterance's segments are published as its chunks are made, as the seed's encoder
appends them. ``live_ready`` waits until the playlist can be started: LIVE_READY_SEGMENTS
segments (players, Chromium's native HLS among them, refuse a live playlist with fewer,
RFC 8216 6.3.3), or its ENDLIST. The status says ``streaming`` from the first segment until
a player that started when the playlist became ready has played all of it (never before
the ENDLIST), and ``idle`` afterwards: "idle" always means that every segment of the
utterance is published and the playlist has ended. An interrupted utterance keeps what was
published before the interruption and ends at once.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import av
from django.conf import settings
from django.http import Http404

from inference.layout import AUDIO_TRACK, chunk_name, chunk_number
from musetalk_site.errors import ApplicationError
from sessions_app import selectors
from sessions_app.hls.idle import hls_idle_clips
from sessions_app.hls.media import segment_ts
from sessions_app.hls.timeline import Clip, target_duration
from sessions_app.models import StreamRequest, StreamSession

IDLE_SEGMENT = re.compile(r"^idle_(\d{3,6})\.ts$")
TS = ".ts"


LIVE_READY_SEGMENTS = 3


@dataclass(frozen=True)
class LiveSegment:
    number: int  # the chunk's number, 1-based
    source: str  # the chunk file, relative to MEDIA_ROOT
    duration: float
    published: float  # epoch seconds


@dataclass(frozen=True)
class Utterance:
    """One utterance as its live playlist shows it at one moment."""

    request: StreamRequest
    segments: list[LiveSegment]  # published so far, in order
    ended: bool  # the playlist has its ENDLIST: nothing more will be published
    ready: bool  # a player can start it (LIVE_READY_SEGMENTS segments, or ended)
    off_air: float | None  # epoch seconds when it stopped streaming; None: still streaming


def utterance_at(*, request: StreamRequest, now: float) -> Utterance:
    """What ``request``'s live playlist holds at ``now`` (epoch seconds)."""
    chunks = list(selectors.chunk_list(request=request))
    cut = request.status == StreamRequest.Status.INTERRUPTED
    finished = request.status not in StreamRequest.ACTIVE_STATUSES
    finished_at = request.finished_at.timestamp() if request.finished_at else now
    limit = min(now, finished_at) if cut else now
    published = [
        LiveSegment(chunk.index + 1, chunk.file, chunk.duration, chunk.created_at.timestamp())
        for chunk in chunks
        if chunk.created_at.timestamp() <= limit
    ]
    ended = finished and (cut or len(published) == len(chunks))
    ready_at = _ready_at(published, finished_at if ended else None)
    off_air = None
    if ended:
        off_air = finished_at if cut else max(finished_at, _played_at(published, ready_at))
    return Utterance(
        request=request,
        segments=published,
        ended=ended,
        ready=ready_at is not None and ready_at <= now,
        off_air=off_air if off_air is not None and off_air <= now else None,
    )


def _played_at(published: list[LiveSegment], ready_at: float | None) -> float:
    """When a player that started at ``ready_at`` has played every segment, waiting for
    each one that was published later than it was due."""
    played = ready_at or 0.0
    for segment in published:
        played = max(played, segment.published) + segment.duration
    return played


def _ready_at(published: list[LiveSegment], ended_at: float | None) -> float | None:
    """When the playlist could first be started, if it can be yet."""
    if len(published) >= LIVE_READY_SEGMENTS:
        return published[LIVE_READY_SEGMENTS - 1].published
    return ended_at if ended_at is not None and published else None


def token_query(token: str | None) -> str:
    return "?token=" + quote(token, safe=":") if token else ""


def _chunk_frames(session: StreamSession) -> int:
    return max(1, round(session.chunk_duration * session.fps))


def live_segment_name(number: int) -> str:
    """``chunk_0001.ts``: the seed's name of the segment of chunk ``number``."""
    return Path(chunk_name(number)).stem + TS


def live_playlist(*, session: StreamSession, stream_id: str | None, token: str | None) -> str:
    """The EVENT playlist of utterance ``stream_id`` (default: the latest); 404 before the
    session's first utterance. Segment URIs are relative, as the seed writes them."""
    request = selectors.request_get_in_session(session=session, request_id=stream_id or "")
    request = request or selectors.request_latest(session=session)
    if request is None:
        raise Http404("Live HLS manifest not found: nothing was streamed in this session yet.")
    utterance = utterance_at(request=request, now=time.time())
    target = target_duration([_chunk_frames(session) / session.fps])
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-PLAYLIST-TYPE:EVENT",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        "#EXT-X-MEDIA-SEQUENCE:0",
    ]
    query = token_query(token)
    for segment in utterance.segments:
        name = live_segment_name(segment.number)
        lines += [
            f"#EXTINF:{segment.duration:.6f},",
            f"segments/{request.request_id}/{name}{query}",
        ]
    if utterance.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def idle_playlist(*, session: StreamSession, token: str | None) -> str:
    """The avatar's idle loop as a VOD playlist (503 until the worker has cut its parts)."""
    clips = hls_idle_clips(avatar=session.avatar)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target_duration([clip.duration for clip in clips])}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        "#EXT-X-MEDIA-SEQUENCE:0",
    ]
    query = token_query(token)
    for index, clip in enumerate(clips):
        lines += [f"#EXTINF:{clip.duration:.6f},", f"segments/idle_{index:03d}{TS}{query}"]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _remux(source: Path, **kwargs: Any) -> bytes:
    if not source.is_file():
        raise Http404("Segment not found.")
    try:
        return segment_ts(source, **kwargs)
    except (OSError, av.FFmpegError):
        raise Http404("Segment not found.") from None  # removed while we read it


def idle_segment(*, session: StreamSession, name: str) -> bytes:
    """Idle part ``idle_007.ts`` as MPEG-TS, at its place in the loop's media time."""
    match = IDLE_SEGMENT.match(name)
    clips = hls_idle_clips(avatar=session.avatar)
    index = int(match.group(1)) if match else len(clips)
    if index >= len(clips):
        raise Http404("Segment not found.")
    start = round(sum(clip.duration for clip in clips[:index]), 6)
    clip = clips[index]
    return _remux(Path(settings.MEDIA_ROOT) / clip.source, start=start, duration=clip.duration)


def live_segment(*, session: StreamSession, request_id: str, name: str) -> bytes:
    """Chunk ``chunk_0003.ts`` of utterance ``request_id`` as MPEG-TS: chunk k starts at
    (k - 1) * F / fps on the utterance's media timeline, its audio cut from the
    utterance's continuous track."""
    number = chunk_number(name[: -len(TS)] + ".mp4") if name.endswith(TS) else None
    request = selectors.request_get_in_session(session=session, request_id=request_id)
    chunk = request.chunks.filter(index=number - 1).first() if request and number else None
    if chunk is None or number is None:
        raise Http404("Segment not found.")
    source = Path(settings.MEDIA_ROOT) / chunk.file
    start = (number - 1) * _chunk_frames(session) / session.fps
    track = source.with_name(AUDIO_TRACK)
    audio = (track, start) if track.is_file() else None
    return _remux(source, start=start, duration=chunk.duration, audio=audio)


def idle_clips_or_none(session: StreamSession) -> list[Clip] | None:
    """The idle parts, or None while the worker has not cut them yet."""
    try:
        return hls_idle_clips(avatar=session.avatar)
    except (ApplicationError, Http404):
        return None
