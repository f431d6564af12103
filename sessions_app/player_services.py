"""What the WebView players need: token-only session access, the idle loop, the start
point of the event feed, and fragmented copies of the chunks for Media Source Extensions.

The chunks are regular MP4s (one ``moov`` index, +faststart). MSE only accepts fragmented
ISO BMFF (``moov`` without samples, then ``moof``/``mdat`` pairs), so each chunk is remuxed
once, without re-encoding, into ``chunk_0001.frag.mp4`` next to it. The folder is removed
with the session's other files.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import av
from django.conf import settings
from django.http import Http404
from django.utils import timezone

from avatars.services.avatar import avatar_dir
from musetalk_site.auth import TOKEN_PARAM
from musetalk_site.errors import NotAuthenticatedError
from sessions_app import selectors
from sessions_app.models import StreamRequest, StreamSession
from sessions_app.realtime import events_after, last_event_id
from sessions_app.services import session_chunk_served
from sessions_app.services.webrtc import ice_servers
from sessions_app.tokens import player_token_make, player_token_session_id

logger = logging.getLogger(__name__)

IDLE_VIDEO = "idle.mp4"
# delay_moov writes the index once the first packets are in, so it keeps the audio's edit
# list: the AAC priming frame (and any audio before the chunk) then sits before 0, where the
# player's append window cuts it off, instead of playing first and making the chunk late.
FRAGMENT_FLAGS = "frag_keyframe+empty_moov+default_base_moof+delay_moov"
FRAGMENT_OPTIONS = {"movflags": FRAGMENT_FLAGS, "use_editlist": "1"}
# A page opened this soon after an utterance finished still plays it (a fast GPU may
# finish a short utterance before the WebView has loaded); older ones are history.
REPLAY_RECENT_SECONDS = 10
AAC_OBJECT_TYPES = {"LC": 2, "HE-AAC": 5, "HE-AACv2": 29}


@dataclass(frozen=True)
class PlayerConfig:
    """What the player page hands to its script (rendered with ``json_script``)."""

    session_id: str
    token: str
    events_url: str
    idle_url: str
    start_after: int
    fps: int  # chunk events give durations in ms; the player rounds them to whole frames

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FragmentedChunk:
    path: Path
    content_type: str


def player_session_get(*, token: str | None, session_id: str, user: Any = None) -> StreamSession:
    """The session a player token opens. Only a player token of this very session will
    do: none or a bad one is a 401, an expired one a 401, another session's a 404.
    Without a token, ``user`` (when signed in) may open its own sessions."""
    if not token and user is not None and user.is_authenticated:
        return selectors.session_get_for_user(user=user, session_id=session_id)
    if not token:
        raise NotAuthenticatedError("This player link has no token.")
    token_session = player_token_session_id(token=token)  # raises the 401 when expired
    if token_session is None:
        raise NotAuthenticatedError("This player link is not valid.")
    session = StreamSession.objects.select_related("avatar").filter(session_id=session_id).first()
    if token_session != session_id or session is None:
        raise Http404("Session not found.")
    return session


def player_config(*, token: str | None, session_id: str, user: Any = None) -> PlayerConfig:
    """What a player page needs. Opened by its owner without a token, the page gets a
    fresh player token of the session for its feed, idle loop and chunks."""
    session = player_session_get(token=token, session_id=session_id, user=user)
    token = token or player_token_make(session_id=session.session_id)
    query = f"?token={token}"
    return PlayerConfig(
        session_id=session.session_id,
        token=token,
        events_url=f"/sessions/{session.session_id}/events{query}",
        idle_url=f"/player/session/{session.session_id}/idle.mp4{query}",
        start_after=player_start_event_id(session=session),
        fps=session.fps,
    )


def player_start_event_id(*, session: StreamSession) -> int:
    """The event id a newly opened player follows from: just before the latest utterance
    while it streams (or finished moments ago), else the session's last event, so a
    reopened page does not replay the whole conversation."""
    request = selectors.request_latest(session=session)
    if request is None or not _still_playing(request):
        return last_event_id(session.session_id)
    for event in events_after(session.session_id, 0):
        if event.payload.get("request_id") == request.request_id:
            return event.id - 1
    return last_event_id(session.session_id)


def _still_playing(request: StreamRequest) -> bool:
    if request.status in StreamRequest.ACTIVE_STATUSES:
        return True
    recent = timezone.now() - timedelta(seconds=REPLAY_RECENT_SECONDS)
    return request.finished_at is not None and request.finished_at >= recent


def player_idle_video(*, token: str | None, session_id: str) -> Path:
    """The idle loop of the session's avatar (404 when the avatar has none)."""
    session = player_session_get(token=token, session_id=session_id)
    path = avatar_dir(session.avatar) / IDLE_VIDEO
    if not path.is_file():
        raise Http404("This avatar has no idle video.")
    return path


def player_chunk_fragmented(
    *, user: Any, token: str | None, request_id: str, name: str
) -> FragmentedChunk:
    """The fragmented copy of chunk ``name`` for whoever may read the chunk itself."""
    path, session = selectors.chunk_get_for_access(
        user=user, token=token, request_id=request_id, name=name
    )
    try:
        fragmented = chunk_fragment(path=path)
        content_type = mp4_content_type(path=fragmented)
    except (OSError, av.FFmpegError) as exc:
        # Typically the session's files were removed while we read them.
        logger.info("could not fragment %s: %s", path, exc)
        raise Http404("Chunk not found.") from None
    session_chunk_served(session=session)
    return FragmentedChunk(path=fragmented, content_type=content_type)


def chunk_fragment(*, path: Path) -> Path:
    """``chunk_0001.frag.mp4`` next to ``path``, remuxed (not re-encoded) on first use."""
    target = path.with_name(path.stem + ".frag.mp4")
    if target.is_file():
        return target
    # A private temporary name: two players asking at once each write their own copy,
    # and the rename makes either one appear whole.
    partial = path.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        _remux_fragmented(path, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _remux_fragmented(source: Path, target: Path) -> None:
    with (
        av.open(str(source)) as inp,
        av.open(str(target), "w", "mp4", options=FRAGMENT_OPTIONS) as out,
    ):
        streams = {stream.index: out.add_stream_from_template(stream) for stream in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:  # the demuxer's end-of-stream flush packets
                continue
            _declare_whole_aac_frame(packet)
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


def _declare_whole_aac_frame(packet: Any) -> None:
    """The chunk's last AAC frame is stored with the duration of the samples it covers, but
    decoders put out the whole 1024: a browser plays the surplus past the chunk's end. Said
    to be whole, it straddles the player's append window end, which trims it exactly."""
    context = packet.stream.codec_context
    if context.name == "aac" and packet.duration and packet.duration < context.frame_size:
        packet.duration = context.frame_size


def mp4_content_type(*, path: Path) -> str:
    """``video/mp4; codecs="avc1.PPCCLL, mp4a.40.2"`` as read from the file's own streams,
    so the player asks MediaSource for exactly what the encoder produced."""
    with av.open(str(path)) as container:
        codecs = [_codec_string(stream) for stream in container.streams]
    known = [codec for codec in codecs if codec]
    return f'video/mp4; codecs="{", ".join(known)}"' if known else "video/mp4"


def _codec_string(stream: Any) -> str | None:
    context = stream.codec_context
    if context.name == "h264":
        extradata = context.extradata or b""
        if len(extradata) >= 4 and extradata[0] == 1:  # avcC: version, profile, flags, level
            return f"avc1.{extradata[1]:02x}{extradata[2]:02x}{extradata[3]:02x}"
        return "avc1.42e01e"
    if context.name == "aac":
        return f"mp4a.40.{AAC_OBJECT_TYPES.get(context.profile or 'LC', 2)}"
    return None


def webrtc_player_config(*, token: str | None, session_id: str, user: Any = None) -> dict[str, Any]:
    """What the WebRTC player page hands to its script: where to signal and how to connect
    (a WebRTC session only; the token goes along on every request)."""
    session = player_session_get(token=token, session_id=session_id, user=user)
    if session.kind != StreamSession.Kind.WEBRTC:
        raise Http404(f"Session {session_id!r} is not a WebRTC session.")
    query = f"?{TOKEN_PARAM}={token}" if token else ""
    base = f"/webrtc/sessions/{session.session_id}"
    return {
        "session_id": session.session_id,
        "offer_url": f"{base}/offer{query}",
        "ice_url": f"{base}/ice{query}",
        "status_url": f"{base}/status{query}",
        "ice_servers": ice_servers(),
        "ice_transport_policy": settings.WEBRTC_ICE_TRANSPORT_POLICY,
        "fps": session.fps,
    }
