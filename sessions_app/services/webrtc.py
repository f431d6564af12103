"""WebRTC sessions, the process that holds their peer connections (the web process).

A WebRTC session is a :class:`StreamSession` of kind ``webrtc``; its peer connection, tracks
and live feed live in this process's :class:`PeerRegistry` (one asyncio loop: daphne's).
Utterances go to the worker like any other (``delivery=frames``): the worker publishes each
frame to the utterance's Redis Stream and the registry feeds them to the video track, the
audio (decoded here from the uploaded file) to the synced audio track.

The async functions run on the event loop; database work goes through ``sync_to_async``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import numpy as np
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import close_old_connections
from django.utils import timezone

from avatars.services.avatar import avatar_dir
from musetalk_site.errors import ApplicationError
from sessions_app.models import StreamRequest, StreamSession
from sessions_app.services.session import (
    prebuffer_frames,
    session_delete,
    session_interrupt,
    session_stream_admit,
)
from sessions_app.webrtc.encoder import install_x264_preset
from sessions_app.webrtc.peers import Peer, PeerConfig, PeerRegistry, SignalingError
from sessions_app.webrtc.tracks import AUDIO_RATE, IdleLoop, decode_pcm

logger = logging.getLogger(__name__)

IDLE_CACHE_SIZE = 8  # decoded idle loops kept (a 10-s loop at 576x768 is ~160 MB)
# An utterance starts this many frames after the idle frame on screen when it is sent: the
# idle loop moves on while the worker makes its first frames.
START_LOOKAHEAD_FRAMES = 3

_registry: PeerRegistry | None = None
_idle: OrderedDict[tuple[str, int], IdleLoop] = OrderedDict()
_idle_lock = threading.Lock()


SWEEP_SECONDS = 5.0  # how often this process's peers are checked against their sessions
CONNECT_SECONDS = 60.0  # a peer that has not connected by then is closed

_sweeper: asyncio.Task[None] | None = None


def peer_registry() -> PeerRegistry:
    """This process's peer connections (created on first use, on the running loop)."""
    global _registry
    if _registry is None:
        install_x264_preset(settings.WEBRTC_X264_PRESET)
        _registry = PeerRegistry(settings.REDIS_URL)
    return _registry


def _ensure_sweeper() -> None:
    """Start, on the running loop, the task that closes the peers of sessions that ended,
    expired or were deleted (by any process), and peers that never connected."""
    global _sweeper
    if _sweeper is None or _sweeper.done():
        # A context of its own: not the request's that happened to start it (whose
        # thread-sensitive executor goes away with the request).
        loop = asyncio.get_running_loop()
        _sweeper = loop.create_task(_sweep_forever(), context=contextvars.Context())


async def _sweep_forever() -> None:
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            await peers_sweep()
        except Exception:
            logger.exception("sweeping the WebRTC peers failed")


def _open_session_ids(ids: list[str]) -> set[str]:
    try:
        return set(
            StreamSession.objects.filter(
                session_id__in=ids,
                status=StreamSession.Status.ACTIVE,
                expires_at__gt=timezone.now(),
            ).values_list("session_id", flat=True)
        )
    finally:
        close_old_connections()  # a thread of the default executor: no request closes it


async def peers_sweep() -> list[str]:
    """Close the peers whose session is no longer open, or that never connected; returns
    the session ids closed."""
    registry = peer_registry()
    if not registry.peers:
        return []
    open_ids = await sync_to_async(_open_session_ids, thread_sensitive=False)(list(registry.peers))
    now = time.monotonic()
    closing = [
        session_id
        for session_id, peer in list(registry.peers.items())
        if session_id not in open_ids
        or (peer.state != "connected" and now - peer.created > CONNECT_SECONDS)
    ]
    for session_id in closing:
        logger.info("closing the WebRTC peer of session %s", session_id)
        await registry.close(session_id)
    return closing


def ice_servers() -> list[dict[str, Any]]:
    """The ``ice_servers`` a client uses, from WEBRTC_STUN_URLS / WEBRTC_TURN_URLS."""
    servers: list[dict[str, Any]] = [{"urls": url} for url in settings.WEBRTC_STUN_URLS]
    for url in settings.WEBRTC_TURN_URLS:
        server: dict[str, Any] = {"urls": url}
        if settings.WEBRTC_TURN_USERNAME:
            server["username"] = settings.WEBRTC_TURN_USERNAME
        if settings.WEBRTC_TURN_CREDENTIAL:
            server["credential"] = settings.WEBRTC_TURN_CREDENTIAL
        servers.append(server)
    return servers


def peer_config(session: StreamSession) -> PeerConfig:
    return PeerConfig(
        fps=session.fps,
        playback_fps=session.playback_fps,
        prebuffer_frames=prebuffer_frames(session),
        max_lead=settings.WEBRTC_AUDIO_MAX_LEAD_SECONDS,
        max_lag=settings.WEBRTC_AUDIO_MAX_LAG_SECONDS,
        ice_servers=tuple(ice_servers()),
    )


def idle_loop(session: StreamSession) -> IdleLoop:
    """The avatar's idle loop (``idle.mp4``, decoded once per version of the file); an avatar
    without one idles on its first prepared frame."""
    folder = avatar_dir(session.avatar)
    source = folder / "idle.mp4"
    if not source.is_file():
        frames = sorted((folder / "frames").glob("*.png"))
        if not frames:
            raise ApplicationError("This avatar has no frames to show.", status=409)
        source = frames[0]
    key = (str(source), source.stat().st_mtime_ns)
    with _idle_lock:
        known = _idle.get(key)
        if known is not None:
            _idle.move_to_end(key)
            return known
    loop = IdleLoop.from_file(source)
    with _idle_lock:
        _idle[key] = loop
        while len(_idle) > IDLE_CACHE_SIZE:
            _idle.popitem(last=False)
    return loop


async def webrtc_offer(*, session: StreamSession, offer: Any) -> dict[str, str]:
    """Answer the viewer's offer (after ICE gathering); 409 while a peer is connected."""
    if not isinstance(offer, dict):
        raise ApplicationError("The body must be a JSON object {sdp, type}.")
    loop = await asyncio.to_thread(idle_loop, session)
    _ensure_sweeper()
    try:
        answer = await peer_registry().answer(session.session_id, offer, loop, peer_config(session))
    except SignalingError as exc:
        raise ApplicationError(str(exc), status=exc.status) from exc
    return {"sdp": answer.sdp, "type": answer.type}


async def webrtc_candidate(*, session: StreamSession, payload: Any) -> None:
    try:
        await peer_registry().add_candidate(session.session_id, payload)
    except SignalingError as exc:
        raise ApplicationError(str(exc), status=exc.status) from exc


def _connected_peer(session: StreamSession) -> Peer:
    peer = peer_registry().get(session.session_id)
    if peer is None or peer.state != "connected":
        raise ApplicationError(
            "No viewer is connected to this session yet: send the offer and let ICE connect.",
            {"session_id": session.session_id, "peer_state": peer.state if peer else None},
            status=409,
        )
    return peer


@dataclass(frozen=True)
class Utterance:
    request: StreamRequest
    seconds: float  # of audio, as decoded for the peer


async def webrtc_stream(
    *, session: StreamSession, audio: UploadedFile, interrupt: bool = False
) -> Utterance:
    """Queue an utterance for the session's connected peer: the worker makes its frames,
    starting where the idle loop on screen will be; the audio is decoded here. 409 while one
    is active unless ``interrupt``."""
    peer = _connected_peer(session)
    pcm = await asyncio.to_thread(_decoded, audio)  # None: the check below says what is wrong
    cycle_start = peer.video.position + START_LOOKAHEAD_FRAMES
    request, _ = await sync_to_async(session_stream_admit)(
        session=session,
        audio=audio,
        interrupt=interrupt,
        delivery=StreamRequest.FRAMES,
        cycle_start=cycle_start,
    )
    if pcm is None:
        await sync_to_async(session_interrupt)(session=session)
        raise ApplicationError("audio_file could not be decoded.", {"field": "audio_file"})
    try:
        peer_registry().start_live(session.session_id, request.request_id, pcm)
    except SignalingError as exc:  # the viewer left meanwhile: nobody to make frames for
        await sync_to_async(session_interrupt)(session=session)
        raise ApplicationError(str(exc), status=exc.status) from exc
    return Utterance(request, len(pcm) / AUDIO_RATE)


def _decoded(audio: UploadedFile) -> np.ndarray | None:
    try:
        audio.seek(0)
        return decode_pcm(cast(BinaryIO, audio.file))
    except Exception:
        return None
    finally:
        audio.seek(0)


async def webrtc_interrupt(*, session: StreamSession) -> list[str]:
    """Back to idle at the next frame (this process), and the utterance stopped (worker)."""
    peer_registry().interrupt(session.session_id)
    stopped: list[str] = await sync_to_async(session_interrupt)(session=session)
    return stopped


async def webrtc_delete(*, session: StreamSession) -> StreamSession:
    await peer_registry().close(session.session_id)
    deleted: StreamSession = await sync_to_async(session_delete)(session=session)
    return deleted


def webrtc_config(session: StreamSession) -> dict[str, Any]:
    return {
        "fps": session.fps,
        "playback_fps": session.playback_fps or session.fps,
        "batch_size": session.batch_size,
        "chunk_duration": session.chunk_duration,
        "prebuffer_seconds": settings.WEBRTC_AUDIO_PREBUFFER_SECONDS,
    }
