"""The peer connections of one process (aiortc, asyncio): one per WebRTC session.

A :class:`Peer` holds the session's tracks (one switchable video track and one audio track,
see ``tracks.py``) and its ``RTCPeerConnection``; :class:`PeerRegistry` creates, finds and
closes them and feeds live utterances into them from the worker's frame streams
(``transport.py``). Signaling errors raise :class:`SignalingError` (a 4xx for the caller).

No Django here: the web process wires it to its views and consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis.asyncio
from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from sessions_app.webrtc.tracks import (
    IdleLoop,
    LiveFrame,
    SwitchableVideoStreamTrack,
    SyncedAudioStreamTrack,
)
from sessions_app.webrtc.transport import StreamEnd, read_frames

logger = logging.getLogger(__name__)


class SignalingError(ValueError):
    """An offer, answer or candidate that cannot be used; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PeerConfig:
    fps: int = 25
    playback_fps: int | None = None
    prebuffer_frames: int = 5
    max_lead: float = 0.08
    max_lag: float = 0.12
    ice_servers: tuple[dict[str, Any], ...] = ()


def rtc_configuration(ice_servers: tuple[dict[str, Any], ...]) -> RTCConfiguration:
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(
                urls=server["urls"],
                username=server.get("username"),
                credential=server.get("credential"),
            )
            for server in ice_servers
        ]
    )


@dataclass
class Peer:
    session_id: str
    pc: RTCPeerConnection
    video: SwitchableVideoStreamTrack
    audio: SyncedAudioStreamTrack
    created: float = field(default_factory=time.monotonic)
    answered: bool = False
    request_id: str = ""  # the utterance being fed, if any
    feed: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    def stats(self) -> dict[str, Any]:
        video = self.video
        return {
            "video": {
                "live_released": video.live_released,
                "prebuffer_ready": video.prebuffer_ready,
                "frames_played": video.stats.frames_played,
                "live_active": video.live_active,
                "generation_complete": video.generation_complete,
                "queue_size": video.queue_size,
                "repeated_live_frames": video.stats.repeated_live_frames,
            },
            "audio": {
                "live_frames": self.audio.stats.live_frames,
                "held_frames": self.audio.stats.held_frames,
                "skipped_samples": self.audio.stats.skipped_samples,
                "offset_seconds": self.audio.stats.last_offset,
            },
            "sync_clock": {
                "playout_released": video.sync.started,
                "active": video.sync.active,
            },
        }


def _check_sdp(sdp: Any, kind: Any) -> RTCSessionDescription:
    if kind != "offer":
        raise SignalingError(f"expected an SDP offer, got type {kind!r}")
    if not isinstance(sdp, str) or not sdp.startswith("v=0") or "m=" not in sdp:
        raise SignalingError("the offer's sdp is not a session description (v=0 ... m=...)")
    return RTCSessionDescription(sdp=sdp, type="offer")


def parse_candidate(payload: Any) -> RTCIceCandidate | None:
    """A trickled ``{candidate, sdpMid, sdpMLineIndex}``; None for the end of candidates
    (a null or empty candidate)."""
    if not isinstance(payload, dict) or "candidate" not in payload:
        raise SignalingError("an ICE candidate needs candidate, sdpMid and sdpMLineIndex")
    text = payload["candidate"]
    if text in (None, ""):
        return None
    if not isinstance(text, str):
        raise SignalingError("candidate must be a string")
    if payload.get("sdpMid") is None and payload.get("sdpMLineIndex") is None:
        raise SignalingError("an ICE candidate needs sdpMid or sdpMLineIndex")
    try:
        candidate = candidate_from_sdp(text.removeprefix("candidate:"))
    except (ValueError, IndexError, AssertionError) as exc:  # aiortc asserts on short lines
        raise SignalingError(f"not an ICE candidate: {text[:80]!r}") from exc
    candidate.sdpMid = payload.get("sdpMid")
    candidate.sdpMLineIndex = payload.get("sdpMLineIndex")
    return candidate


def _h264_first() -> list[Any]:
    """Video codecs with H.264 first (hardware decoders on phones; VP8 when the viewer
    offers no H.264)."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    return sorted(codecs, key=lambda codec: codec.mimeType.lower() != "video/h264")


def _stop_feed(peer: Peer) -> None:
    """Stop feeding the peer the utterance it was playing (its frames stay in Redis)."""
    if peer.feed is not None and not peer.feed.done():
        peer.feed.cancel()
    peer.feed = None


class PeerRegistry:
    """The process's peers by session id (one asyncio loop owns them all)."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.peers: dict[str, Peer] = {}
        self._redis: redis.asyncio.Redis | None = None

    def _client(self) -> redis.asyncio.Redis:
        if self._redis is None:
            self._redis = redis.asyncio.Redis.from_url(self.redis_url)
        return self._redis

    def get(self, session_id: str) -> Peer | None:
        return self.peers.get(session_id)

    async def answer(
        self, session_id: str, offer: dict[str, Any], idle: IdleLoop, config: PeerConfig
    ) -> RTCSessionDescription:
        """Answer ``offer`` with the session's tracks, after ICE gathering. A second offer
        while a peer is connected is refused (409); one after a failed peer replaces it."""
        description = _check_sdp(offer.get("sdp"), offer.get("type"))
        current = self.peers.get(session_id)
        if current is not None:
            if current.state in ("new", "connecting", "connected"):
                raise SignalingError("this session already has a peer connection", 409)
            await self.close(session_id)
        pc = RTCPeerConnection(rtc_configuration(config.ice_servers))
        video = SwitchableVideoStreamTrack(
            idle,
            fps=config.fps,
            playback_fps=config.playback_fps,
            prebuffer=config.prebuffer_frames,
        )
        audio = SyncedAudioStreamTrack(video.sync, max_lead=config.max_lead, max_lag=config.max_lag)
        peer = Peer(session_id, pc, video, audio)
        video.on_idle(audio.stop)
        self.peers[session_id] = peer

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.close(session_id)

        try:
            # Our transceivers first: the offer's m-lines take them (codecs are settled as
            # the offer is applied, so the H.264 preference must be there already).
            pc.addTransceiver(video, direction="sendonly").setCodecPreferences(_h264_first())
            pc.addTransceiver(audio, direction="sendonly")
            await pc.setRemoteDescription(description)
            if not any(t.kind == "video" and t.mid is not None for t in pc.getTransceivers()):
                raise SignalingError("the offer has no video m-line (add a recvonly transceiver)")
            await pc.setLocalDescription(await pc.createAnswer())  # waits for ICE gathering
        except SignalingError:
            await self.close(session_id)
            raise
        except Exception as exc:  # aiortc's parse and negotiation errors
            await self.close(session_id)
            raise SignalingError(f"the offer could not be used: {exc}") from exc
        peer.answered = True
        return pc.localDescription

    async def add_candidate(self, session_id: str, payload: Any) -> None:
        peer = self.peers.get(session_id)
        if peer is None or not peer.answered:
            raise SignalingError("no peer connection for this session: send the offer first", 409)
        candidate = parse_candidate(payload)
        try:
            await peer.pc.addIceCandidate(candidate)
        except Exception as exc:
            raise SignalingError(f"the candidate could not be used: {exc}") from exc

    def start_live(self, session_id: str, request_id: str, pcm: np.ndarray) -> Peer:
        """Feed utterance ``request_id`` (its frames from the worker, its 48 kHz PCM) to the
        session's peer; an utterance still playing is interrupted first."""
        peer = self.peers.get(session_id)
        if peer is None or peer.state != "connected":
            raise SignalingError("no connected peer for this session", 409)
        self.interrupt(session_id)
        peer.request_id = request_id
        peer.video.start_live()
        peer.audio.play(pcm)
        peer.feed = asyncio.ensure_future(self._feed(peer, request_id))
        return peer

    async def _feed(self, peer: Peer, request_id: str) -> None:
        try:
            async for item in read_frames(self._client(), request_id):
                if peer.request_id != request_id:
                    return
                if isinstance(item, StreamEnd):
                    if item.error:
                        logger.warning("utterance %s failed: %s", request_id, item.error)
                    break
                assert isinstance(item, LiveFrame)
                peer.video.push(item)
        finally:
            if peer.request_id == request_id:
                peer.video.end_live()

    def interrupt(self, session_id: str) -> bool:
        """Back to idle at the next frame; whether an utterance was playing."""
        peer = self.peers.get(session_id)
        if peer is None:
            return False
        was_live = peer.video.live_requested
        _stop_feed(peer)
        peer.request_id = ""
        peer.video.interrupt()
        peer.audio.stop()
        return was_live

    async def close(self, session_id: str) -> bool:
        peer = self.peers.pop(session_id, None)
        if peer is None:
            return False
        _stop_feed(peer)
        peer.video.stop()
        peer.audio.stop()
        with contextlib.suppress(Exception):
            await peer.pc.close()
        return True

    async def close_all(self) -> None:
        for session_id in list(self.peers):
            await self.close(session_id)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def stats(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for peer in self.peers.values():
            states[peer.state] = states.get(peer.state, 0) + 1
        return {
            "peers": len(self.peers),
            "states": states,
            "live": sum(1 for p in self.peers.values() if p.video.live_active),
        }
