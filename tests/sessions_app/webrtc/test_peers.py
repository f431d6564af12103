"""The peer registry with a real aiortc client over loopback and the real Redis: offer/answer,
idle frames, a live utterance fed from a frame stream (video and audio), interrupt, bad
signaling, and closing leaves no peer behind."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import av
import numpy as np
import pytest
import pytest_asyncio
import redis
from aiortc import RTCPeerConnection

from sessions_app.webrtc.peers import PeerConfig, PeerRegistry, SignalingError, parse_candidate
from sessions_app.webrtc.tracks import AUDIO_RATE, IdleLoop
from sessions_app.webrtc.transport import FramePublisher
from tests.sessions_app.webrtc.pictures import H, W
from tests.sessions_app.webrtc.pictures import flat as _flat
from tests.sessions_app.webrtc.pictures import level as _level

FPS = 25


class Client:
    """A viewer: recvonly video + audio, every received frame in a queue."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.video: asyncio.Queue[av.VideoFrame] = asyncio.Queue()
        self.audio: asyncio.Queue[av.AudioFrame] = asyncio.Queue()
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")

        @self.pc.on("track")
        def on_track(track) -> None:
            queue = self.video if track.kind == "video" else self.audio

            async def pull() -> None:
                while True:
                    try:
                        await queue.put(await track.recv())
                    except Exception:
                        return

            asyncio.ensure_future(pull())

    async def offer(self) -> dict:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": "offer"}

    async def frames(self, n: int) -> list[av.VideoFrame]:
        return [await asyncio.wait_for(self.video.get(), 10) for _ in range(n)]


@pytest_asyncio.fixture()
async def registry(redis_server: str) -> AsyncIterator[PeerRegistry]:
    made = PeerRegistry(redis_server)
    yield made
    await made.close_all()


async def _connect(registry: PeerRegistry, session_id: str) -> Client:
    client = Client()
    idle = IdleLoop([_flat(40 + 10 * p) for p in range(4)])
    answer = await registry.answer(session_id, await client.offer(), idle, PeerConfig(fps=FPS))
    assert answer.type == "answer" and "a=candidate" in answer.sdp  # gathered before answering
    video = answer.sdp[answer.sdp.index("m=video") :]
    first = video.split("\r\n")[0].split()[3]  # the first payload type of the video m-line
    assert f"a=rtpmap:{first} H264/90000" in video  # H.264 preferred
    await client.pc.setRemoteDescription(answer)
    for _ in range(100):
        if registry.get(session_id).state == "connected":
            break
        await asyncio.sleep(0.1)
    assert registry.get(session_id).state == "connected"
    return client


@pytest.mark.asyncio
async def test_a_viewer_gets_the_idle_loop_then_a_live_utterance_then_idle(
    registry: PeerRegistry, redis_server: str
) -> None:
    client = await _connect(registry, "s1")
    try:
        idle = [_level(f) for f in await client.frames(8)]
        assert all(any(abs(level - (40 + 10 * p)) <= 4 for p in range(4)) for level in idle)
        request_id = uuid.uuid4().hex
        publisher = FramePublisher(redis.Redis.from_url(redis_server), request_id)
        tone = (8000 * np.sin(np.arange(AUDIO_RATE) * 2 * np.pi * 440 / AUDIO_RATE)).astype(
            np.int16
        )
        peer = registry.start_live("s1", request_id, tone)
        for i in range(25):
            frame = _flat(230).to_ndarray(format="yuv420p").tobytes()
            publisher.frame(index=i, cycle=i % 4, i420=frame, width=W, height=H)
        publisher.end()
        levels = [_level(f) for f in await client.frames(60)]
        live = [n for n, level in enumerate(levels) if level > 215]
        assert len(live) >= 20, levels  # the live frames came (a few may be lost to the codec)
        assert all(level <= 215 for level in levels[live[-1] + 1 :])  # idle again after
        assert peer.video.stats.live_frames_played == 25
        assert peer.audio.stats.live_frames > 10  # the tone went out with the video
        loud = 0
        while not client.audio.empty():
            samples = client.audio.get_nowait().to_ndarray()
            loud += int(np.abs(samples).max() > 1000)
        assert loud > 5
        stats = peer.stats()
        assert stats["video"]["generation_complete"] and not stats["video"]["live_active"]
        assert stats["sync_clock"]["playout_released"] and not stats["sync_clock"]["active"]
    finally:
        await client.pc.close()


@pytest.mark.asyncio
async def test_an_interrupt_goes_back_to_idle_at_once(registry: PeerRegistry, redis_server: str):
    client = await _connect(registry, "s2")
    try:
        request_id = uuid.uuid4().hex
        publisher = FramePublisher(redis.Redis.from_url(redis_server), request_id)
        peer = registry.start_live("s2", request_id, np.zeros(AUDIO_RATE * 4, dtype=np.int16))
        for i in range(100):  # 4 s of frames, all queued at once
            frame = _flat(230).to_ndarray(format="yuv420p").tobytes()
            publisher.frame(index=i, cycle=i % 4, i420=frame, width=W, height=H)
        await asyncio.sleep(0.5)
        assert peer.video.live_active
        assert registry.interrupt("s2") is True
        assert not peer.video.live_active and peer.video.queue_size == 0
        assert not peer.audio.playing and peer.feed is None
        await asyncio.sleep(0.2)
        assert not peer.video.live_active  # nothing more was fed
    finally:
        await client.pc.close()


@pytest.mark.asyncio
async def test_bad_offers_are_refused_and_leave_no_peer(registry: PeerRegistry) -> None:
    idle = IdleLoop([_flat(40)])
    for offer, message in (
        ({"sdp": "hello", "type": "offer"}, "not a session description"),
        ({"sdp": "v=0\r\nm=video", "type": "answer"}, "expected an SDP offer"),
        ({"type": "offer"}, "not a session description"),
        ({"sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=nonsense\r\n", "type": "offer"}, "offer"),
    ):
        with pytest.raises(SignalingError, match=message) as raised:
            await registry.answer("bad", offer, idle, PeerConfig())
        assert raised.value.status == 400
    assert registry.peers == {}


@pytest.mark.asyncio
async def test_an_offer_without_video_is_refused(registry: PeerRegistry) -> None:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        with pytest.raises(SignalingError, match="no video m-line"):
            await registry.answer(
                "audio-only",
                {"sdp": pc.localDescription.sdp, "type": "offer"},
                IdleLoop([_flat(40)]),
                PeerConfig(),
            )
        assert registry.peers == {}
    finally:
        await pc.close()


@pytest.mark.asyncio
async def test_a_second_offer_while_connected_is_a_conflict_and_close_leaves_nothing(
    registry: PeerRegistry,
) -> None:
    client = await _connect(registry, "s3")
    other = Client()
    try:
        with pytest.raises(SignalingError) as raised:
            await registry.answer("s3", await other.offer(), IdleLoop([_flat(1)]), PeerConfig())
        assert raised.value.status == 409
        assert registry.stats()["peers"] == 1
        assert await registry.close("s3") is True
        assert registry.stats() == {"peers": 0, "states": {}, "live": 0}
        assert await registry.close("s3") is False
    finally:
        await client.pc.close()
        await other.pc.close()


@pytest.mark.asyncio
async def test_a_viewer_that_hangs_up_is_closed_on_the_server_too(registry: PeerRegistry):
    client = await _connect(registry, "s4")
    await client.pc.close()
    for _ in range(100):  # ICE consent freshness notices within ~30 s; the close sooner
        if registry.get("s4") is None:
            break
        await asyncio.sleep(0.3)
    assert registry.get("s4") is None


@pytest.mark.asyncio
async def test_live_needs_a_connected_peer(registry: PeerRegistry) -> None:
    with pytest.raises(SignalingError, match="no connected peer") as raised:
        registry.start_live("nobody", "r", np.zeros(10, dtype=np.int16))
    assert raised.value.status == 409


def test_candidates_are_parsed_as_browsers_trickle_them() -> None:
    line = "candidate:842163049 1 udp 1677729535 192.168.1.2 56143 typ srflx raddr 0.0.0.0 rport 0"
    candidate = parse_candidate({"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0})
    assert candidate is not None
    assert (candidate.ip, candidate.port, candidate.type) == ("192.168.1.2", 56143, "srflx")
    assert candidate.sdpMid == "0" and candidate.sdpMLineIndex == 0
    assert parse_candidate({"candidate": None}) is None  # the end of candidates
    assert parse_candidate({"candidate": "", "sdpMid": "0"}) is None
    for bad, message in (
        ({}, "needs candidate"),
        ("text", "needs candidate"),
        ({"candidate": 5, "sdpMid": "0"}, "must be a string"),
        ({"candidate": line}, "sdpMid or sdpMLineIndex"),
        ({"candidate": "candidate:garbage", "sdpMid": "0"}, "not an ICE candidate"),
    ):
        with pytest.raises(SignalingError, match=message):
            parse_candidate(bad)


@pytest.mark.asyncio
async def test_the_viewers_video_is_encoded_with_the_installed_x264_preset(
    registry: PeerRegistry, monkeypatch
) -> None:
    import aiortc.rtcrtpsender

    from sessions_app.webrtc import encoder as encoder_module

    monkeypatch.setattr(aiortc.rtcrtpsender, "get_encoder", aiortc.rtcrtpsender.get_encoder)
    monkeypatch.setattr(encoder_module, "_installed", [])
    encoder_module.install_x264_preset("superfast")
    client = await _connect(registry, "s-preset")
    try:
        assert len(await client.frames(5)) == 5  # encoded, sent, decoded
        sender = next(
            s for s in registry.get("s-preset").pc.getSenders() if s.track.kind == "video"
        )
        used = sender._RTCRtpSender__encoder  # aiortc's own attribute (pinned version)
        assert isinstance(used, encoder_module.PresetH264Encoder) and used.preset == "superfast"
    finally:
        await client.pc.close()
