"""The WebRTC tracks on a virtual clock (their pacing, switching and sync), and once through a
real aiortc peer connection pair."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from sessions_app.webrtc.tracks import (
    AUDIO_RATE,
    AUDIO_SAMPLES,
    VIDEO_CLOCK_RATE,
    IdleLoop,
    LiveFrame,
    SilenceAudioStreamTrack,
    SwitchableVideoStreamTrack,
    SyncedAudioStreamTrack,
    VideoSyncClock,
    decode_pcm,
    i420_bytes,
)
from tests.media import make_face_video, make_speech_wav
from tests.sessions_app.webrtc.pictures import H, W
from tests.sessions_app.webrtc.pictures import flat as _flat
from tests.sessions_app.webrtc.pictures import level as _level

FPS = 25


class VirtualTime:
    """A clock that moves only when a track sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _idle(n: int = 6) -> IdleLoop:
    return IdleLoop([_flat(20 + 10 * p) for p in range(n)])  # position p has level 20+10p


def _live(index: int, cycle: int, level: int) -> LiveFrame:
    return LiveFrame(index, cycle, W, H, i420_bytes(_flat(level)))


def _track(t: VirtualTime, **kwargs) -> SwitchableVideoStreamTrack:
    return SwitchableVideoStreamTrack(_idle(), fps=FPS, clock=t.clock, sleep=t.sleep, **kwargs)


async def _levels(track: SwitchableVideoStreamTrack, n: int) -> list[int]:
    return [_level(await track.recv()) for _ in range(n)]


@pytest.mark.asyncio
async def test_idle_frames_loop_at_the_session_fps() -> None:
    t = VirtualTime()
    track = _track(t)
    start = t.now
    frames = [await track.recv() for _ in range(13)]
    assert [_level(f) for f in frames] == [20, 30, 40, 50, 60, 70, 20, 30, 40, 50, 60, 70, 20]
    assert [f.pts for f in frames] == [n * VIDEO_CLOCK_RATE // FPS for n in range(13)]
    assert t.now - start == pytest.approx(12 / FPS)
    assert track.stats.idle_frames_played == 13 and track.position == 0


@pytest.mark.asyncio
async def test_a_higher_playback_fps_repeats_source_frames() -> None:
    t = VirtualTime()
    track = _track(t, playback_fps=50)
    frames = [await track.recv() for _ in range(8)]
    assert [_level(f) for f in frames] == [20, 20, 30, 30, 40, 40, 50, 50]
    assert frames[1].pts - frames[0].pts == VIDEO_CLOCK_RATE // 50


@pytest.mark.asyncio
async def test_live_frames_continue_from_the_idle_frame_on_screen_and_idle_resumes_after() -> None:
    t = VirtualTime()
    track = _track(t)
    assert await _levels(track, 3) == [20, 30, 40]
    track.start_live()
    start = track.position + 1  # the utterance starts on the next idle position
    for i in range(4):
        track.push(_live(i, (start + i) % 6, 200 + i))
    track.end_live()
    # live frames in order, then idle from the position after the last live one
    assert await _levels(track, 7) == [200, 201, 202, 203, 30, 40, 50]
    assert track.stats.live_frames_played == 4 and not track.live_active
    assert track.position == 3


@pytest.mark.asyncio
async def test_live_starts_once_the_prebuffer_is_queued() -> None:
    t = VirtualTime()
    track = _track(t, prebuffer=3)
    track.start_live()
    track.push(_live(0, 1, 200))
    track.push(_live(1, 2, 201))
    assert await _levels(track, 2) == [20, 30]  # two queued: still idle
    assert not track.prebuffer_ready
    track.push(_live(2, 3, 202))
    assert track.prebuffer_ready
    assert await _levels(track, 3) == [200, 201, 202]


@pytest.mark.asyncio
async def test_a_late_feed_holds_the_last_live_frame_never_idle_or_black() -> None:
    t = VirtualTime()
    track = _track(t)
    track.start_live()
    track.push(_live(0, 1, 200))
    assert await _levels(track, 4) == [200, 200, 200, 200]
    assert track.stats.repeated_live_frames == 3 and track.live_active
    track.push(_live(1, 2, 201))
    track.end_live()
    assert await _levels(track, 2) == [201, 50]  # idle goes on after cycle 2


@pytest.mark.asyncio
async def test_an_interrupt_drops_queued_frames_and_idles_at_the_next_frame() -> None:
    t = VirtualTime()
    track = _track(t)
    went_idle: list[int] = []
    track.on_idle(lambda: went_idle.append(track.position))
    track.start_live()
    for i in range(10):
        track.push(_live(i, (1 + i) % 6, 200 + i))
    assert await _levels(track, 2) == [200, 201]
    track.interrupt()
    assert track.queue_size == 0 and went_idle == [2]
    track.push(_live(10, 5, 250))  # a frame still on its way is dropped
    assert await _levels(track, 2) == [50, 60]  # after cycle 2, the last live one


@pytest.mark.asyncio
async def test_an_utterance_with_no_frame_goes_back_to_idle() -> None:
    t = VirtualTime()
    track = _track(t, prebuffer=5)
    track.start_live()
    track.end_live()
    assert await _levels(track, 2) == [20, 30]
    assert not track.live_requested


@pytest.mark.asyncio
async def test_the_sync_clock_follows_the_live_frames_shown() -> None:
    t = VirtualTime()
    track = _track(t)
    track.start_live()
    for i in range(3):
        track.push(_live(i, i + 1, 200))
    await track.recv()
    assert track.sync.active and track.sync.video_time() == pytest.approx(0.0)
    await track.recv()
    assert track.sync.video_time() == pytest.approx(1 / FPS)
    t.now += 10  # the frame on screen does not move past its successor
    assert track.sync.video_time() == pytest.approx(2 / FPS)


def _ramp(seconds: float) -> np.ndarray:
    return (np.arange(int(seconds * AUDIO_RATE)) % 30000).astype(np.int16)


def _synced(t: VirtualTime, sync: VideoSyncClock, **kwargs) -> SyncedAudioStreamTrack:
    return SyncedAudioStreamTrack(sync, clock=t.clock, sleep=t.sleep, **kwargs)


@pytest.mark.asyncio
async def test_silence_is_20_ms_frames_with_continuous_timestamps() -> None:
    t = VirtualTime()
    track = SilenceAudioStreamTrack(clock=t.clock, sleep=t.sleep)
    frames = [await track.recv() for _ in range(5)]
    assert [f.pts for f in frames] == [n * AUDIO_SAMPLES for n in range(5)]
    assert all(f.samples == AUDIO_SAMPLES and f.sample_rate == AUDIO_RATE for f in frames)
    assert not any(f.to_ndarray().any() for f in frames)
    assert t.now - 100.0 == pytest.approx(4 * 0.020)


@pytest.mark.asyncio
async def test_synced_audio_waits_for_the_video_then_plays_in_step_with_it() -> None:
    t = VirtualTime()
    sync = VideoSyncClock(FPS, t.clock)
    audio = _synced(t, sync)
    audio.play(_ramp(1.0))
    assert not (await audio.recv()).to_ndarray().any()  # no live video yet: silence
    sync.start()
    start = t.now
    played = []
    for _ in range(25):
        sync.mark(int((t.now - start) * FPS) / FPS)  # the video advancing in real time
        played.append((await audio.recv()).to_ndarray().reshape(-1))
    joined = np.concatenate(played)
    assert np.array_equal(joined, _ramp(1.0)[: len(joined)])  # every sample, in order
    assert audio.stats.held_frames == 0 and audio.stats.skipped_samples == 0
    assert abs(audio.stats.last_offset) <= 0.08


@pytest.mark.asyncio
async def test_audio_that_leads_a_stalled_video_holds_and_one_that_lags_skips() -> None:
    t = VirtualTime()
    sync = VideoSyncClock(FPS, t.clock)
    audio = _synced(t, sync, max_lead=0.08, max_lag=0.12)
    audio.play(_ramp(2.0))
    sync.start()
    sync.mark(0.0)  # then the video stalls on its first frame
    for _ in range(20):
        await audio.recv()
    assert audio.stats.held_frames > 0
    assert audio.stats.last_offset <= 0.08 + 0.020  # never more than the lead (+ one frame)
    sync.mark(1.0)  # the video jumps ahead: the audio skips to it
    samples = (await audio.recv()).to_ndarray().reshape(-1)
    assert audio.stats.skipped_samples > 0
    # on the frame after the jump, the video is 1.0 s + the 20 ms the track waited
    assert samples[0] == _ramp(2.0)[round(1.02 * AUDIO_RATE)]


@pytest.mark.asyncio
async def test_synced_audio_ends_in_silence_when_the_utterance_is_over() -> None:
    t = VirtualTime()
    sync = VideoSyncClock(FPS, t.clock)
    audio = _synced(t, sync)
    audio.play(_ramp(0.05))  # 2.5 frames of 20 ms
    sync.start()
    sync.mark(0.0)
    frames = []
    for _ in range(4):
        sync.mark(max(0.0, t.now - 100.0))
        frames.append((await audio.recv()).to_ndarray().reshape(-1))
    assert frames[0].any() and frames[1].any()
    assert frames[2][: AUDIO_SAMPLES // 2].any() and not frames[2][AUDIO_SAMPLES // 2 :].any()
    assert not frames[3].any() and not audio.playing


def test_pcm_is_decoded_to_48_khz_mono(tmp_path: Path) -> None:
    wav = make_speech_wav(tmp_path / "speech.wav", seconds=1.5, sample_rate=16000, channels=2)
    pcm = decode_pcm(wav)
    assert pcm.dtype == np.int16 and abs(len(pcm) - 1.5 * AUDIO_RATE) <= AUDIO_RATE * 0.01
    assert np.abs(pcm).max() > 1000


def test_a_file_without_audio_is_refused(tmp_path: Path) -> None:
    video = make_face_video(tmp_path / "face.mp4", seconds=0.2, fps=FPS, size=(96, 96))
    with pytest.raises(ValueError, match="no audio"):
        decode_pcm(video)


def test_the_idle_loop_is_decoded_from_the_avatars_idle_video(tmp_path: Path) -> None:
    video = make_face_video(tmp_path / "idle.mp4", seconds=0.4, fps=FPS, size=(96, 128))
    loop = IdleLoop.from_file(video)
    assert len(loop) == 10 and (loop.width, loop.height) == (96, 128)
    assert loop[10].to_ndarray(format="yuv420p").tobytes() == i420_bytes(loop[0])


def test_a_live_frame_round_trips_its_i420_bytes() -> None:
    frame = _flat(77)
    live = LiveFrame(3, 1, W, H, i420_bytes(frame))
    assert len(live.yuv) == W * H * 3 // 2
    assert np.array_equal(live.to_video_frame().to_ndarray(format="yuv420p"), frame.to_ndarray())


@pytest.mark.asyncio
async def test_a_real_peer_connection_receives_the_idle_loop_and_live_frames() -> None:
    """The tracks behind a real aiortc sender: H.264 or VP8 encoded, sent over loopback,
    decoded by the receiving peer; idle frames, then the live ones (bright), in order."""
    idle = IdleLoop([_flat(40) for _ in range(4)])
    video = SwitchableVideoStreamTrack(idle, fps=FPS)
    audio = SyncedAudioStreamTrack(video.sync)
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    sender.addTrack(video)
    sender.addTrack(audio)
    got: asyncio.Queue = asyncio.Queue()

    @receiver.on("track")
    def on_track(track) -> None:
        if track.kind == "video":

            async def pull() -> None:
                while True:
                    try:
                        await got.put(await track.recv())
                    except Exception:
                        return

            asyncio.ensure_future(pull())

    try:
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        first = await asyncio.wait_for(got.get(), 20)
        assert (first.width, first.height) == (W, H)
        assert abs(_level(first) - 40) <= 3
        video.start_live()
        for i in range(15):
            video.push(_live(i, i % 4, 220))
        video.end_live()
        levels = [_level(await asyncio.wait_for(got.get(), 10)) for _ in range(40)]
        bright = [n for n, level in enumerate(levels) if level > 200]
        assert bright, levels
        assert any(abs(level - 40) <= 3 for level in levels[bright[-1] + 1 :]), levels
    finally:
        await sender.close()
        await receiver.close()
