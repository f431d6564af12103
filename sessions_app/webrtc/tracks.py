"""The media tracks of a WebRTC session (aiortc), as the seed API describes them.

- :class:`SwitchableVideoStreamTrack`: one video track that always emits frames at the
  session's ``playback_fps``: the avatar's idle loop, live frames while speaking (pushed by
  the frame feed as the worker makes them), then idle again from where the live frames left
  the avatar, never a frozen or black frame. Source frames advance at ``fps``; a higher
  ``playback_fps`` repeats them.
- :class:`VideoSyncClock`: the media time of the live video on screen, driven by the video
  track as it emits live frames; the audio follows it.
- :class:`SilenceAudioStreamTrack`: 20 ms frames of silence at 48 kHz (keeps the audio m-line
  alive while idle).
- :class:`SyncedAudioStreamTrack`: the session's audio track. Silence while idle; an
  utterance's PCM once ``play`` is called, from the first live frame on screen, kept within
  ``max_lead`` / ``max_lag`` of the video clock (silence while it leads, samples skipped when
  it lags). Timestamps never jump: one track for the session. (The seed's audio prebuffer is
  the video's: live frames start once ``prebuffer`` of them are queued, the audio with them.)

No Django here: the tracks run in the process that owns the peer connection.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_RATE = 48_000
AUDIO_PTIME = 0.020
AUDIO_SAMPLES = int(AUDIO_RATE * AUDIO_PTIME)  # per 20 ms frame
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)

Clock = Callable[[], float]


# -- frames -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveFrame:
    """A frame the worker made: the I420 picture, its index in the utterance (``fps`` frames
    a second from the utterance's start) and the idle-loop position it shows (``cycle``)."""

    index: int
    cycle: int
    width: int
    height: int
    yuv: bytes  # I420: Y (w*h), then U and V (w/2*h/2 each)

    def planes(self) -> np.ndarray:
        """The picture as planar I420 ``(h*3/2, w)``, a view of ``yuv`` (no copy)."""
        return np.frombuffer(self.yuv, dtype=np.uint8).reshape(self.height * 3 // 2, self.width)

    def to_video_frame(self) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(self.planes(), format="yuv420p")


def i420_bytes(frame: av.VideoFrame) -> bytes:
    """An ``av.VideoFrame``'s picture as tightly packed I420 bytes."""
    return frame.to_ndarray(format="yuv420p").tobytes()


class IdleLoop:
    """The avatar's idle loop (``idle.mp4``, the ping-pong cycle at the session fps) as an
    endless series of yuv420p frames, decoded once into memory and shared by every track of
    the avatar. ``len`` is the cycle's length; frame ``p`` is cycle position ``p``. Kept as
    I420 planes: a track makes each frame it sends from them in one copy."""

    def __init__(self, frames: list[av.VideoFrame]) -> None:
        if not frames:
            raise ValueError("an idle loop needs at least one frame")
        self._planes = [frame.to_ndarray(format="yuv420p") for frame in frames]
        self.width = frames[0].width
        self.height = frames[0].height

    @classmethod
    def from_file(cls, path: str | Path, *, size: tuple[int, int] | None = None) -> IdleLoop:
        frames = []
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                width, height = size or (frame.width, frame.height)
                frames.append(frame.reformat(width=width, height=height, format="yuv420p"))
        return cls(frames)

    def __len__(self) -> int:
        return len(self._planes)

    def planes(self, position: int) -> np.ndarray:
        """Position ``position``'s I420 planes (shared: never written to)."""
        return self._planes[position % len(self._planes)]

    def __getitem__(self, position: int) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(self.planes(position), format="yuv420p")


# -- the clock the audio follows ----------------------------------------------------------------


class VideoSyncClock:
    """Where the live video is: ``mark(t)`` when the frame of media time ``t`` (seconds from
    the utterance's start) goes out; ``video_time()`` is that time advanced by the wall time
    since, up to one frame interval (the frame on screen does not move past its successor)."""

    def __init__(self, fps: float, clock: Clock = time.monotonic) -> None:
        self.fps = fps
        self._clock = clock
        self._media: float | None = None
        self._wall = 0.0
        self.active = False

    def start(self) -> None:
        self._media, self.active = None, True

    def stop(self) -> None:
        self.active = False

    def mark(self, media_time: float) -> None:
        self._media, self._wall = media_time, self._clock()

    @property
    def started(self) -> bool:
        return self._media is not None

    def video_time(self) -> float | None:
        if self._media is None:
            return None
        return self._media + min(self._clock() - self._wall, 1.0 / self.fps)


# -- video --------------------------------------------------------------------------------------


class _Pacer:
    """Frame ``n`` of a track is due ``n / rate`` seconds after the first; a late track does
    not burst to catch up by more than one frame (it moves its schedule instead)."""

    def __init__(self, rate: float, clock: Clock, sleep: Callable[[float], object]) -> None:
        self.rate = rate
        self.count = 0
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None

    async def wait(self) -> int:
        now = self._clock()
        if self._start is None:
            self._start = now
        due = self._start + self.count / self.rate
        if due > now:
            await self._sleep(due - now)  # type: ignore[misc]
        elif now - due > 1.0 / self.rate:
            self._start = now - self.count / self.rate
        n = self.count
        self.count += 1
        return n


@dataclass
class VideoStats:
    frames_played: int = 0
    live_frames_played: int = 0
    idle_frames_played: int = 0
    repeated_live_frames: int = 0  # a live frame shown again: the feed ran late


class SwitchableVideoStreamTrack(MediaStreamTrack):
    """Idle loop <-> live frames on one track (see the module's docstring).

    The frame feed calls ``start_live`` (an utterance begins), ``push`` for each frame as it
    arrives (in order), ``end_live`` once the utterance's last frame is pushed, and
    ``interrupt`` to drop what is queued and go back to idle at the next frame. Live playback
    begins once ``prebuffer`` frames are queued (or the utterance ended with fewer).
    """

    kind = "video"

    def __init__(
        self,
        idle: IdleLoop,
        *,
        fps: int,
        playback_fps: int | None = None,
        prebuffer: int = 1,
        sync: VideoSyncClock | None = None,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], object] = asyncio.sleep,
    ) -> None:
        super().__init__()
        self.idle = idle
        self.fps = fps
        self.playback_fps = max(playback_fps or fps, fps)
        self.prebuffer = max(1, prebuffer)
        self.sync = sync or VideoSyncClock(fps, clock)
        self.stats = VideoStats()
        self._pacer = _Pacer(self.playback_fps, clock, sleep)
        self._queue: deque[LiveFrame] = deque()
        self._position = 0  # idle-loop position of the source frame on screen
        self._shown: np.ndarray | None = None  # its I420 planes
        self._source_tick = -1  # the source frame (at fps) last drawn
        self.live_requested = False  # an utterance is open (start_live .. its end)
        self.live_active = False  # live frames are on screen
        self.generation_complete = False  # the open utterance's last frame has arrived
        self.live_released = 0  # live frames taken off the queue in this utterance
        self._on_idle: list[Callable[[], None]] = []

    # the feed's side

    @property
    def position(self) -> int:
        """The idle-loop position on screen (where a new utterance should start from)."""
        return self._position

    def start_live(self) -> None:
        self._queue.clear()
        self.live_requested, self.generation_complete, self.live_released = True, False, 0
        self.sync.start()

    def push(self, frame: LiveFrame) -> None:
        if self.live_requested and not self.generation_complete:
            self._queue.append(frame)

    def end_live(self) -> None:
        self.generation_complete = True

    def interrupt(self) -> None:
        self._queue.clear()
        self.generation_complete = True
        self._back_to_idle()

    def on_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the track goes back to idle after live frames."""
        self._on_idle.append(callback)

    @property
    def queue_size(self) -> int:
        return len(self._queue)

    @property
    def prebuffer_ready(self) -> bool:
        return self.live_active or len(self._queue) >= self.prebuffer

    # aiortc's side

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.wait()
        tick = n * self.fps // self.playback_fps  # the source frame (at fps) due now
        if tick != self._source_tick:
            self._source_tick = tick
            self._shown = self._next_source_frame()
        assert self._shown is not None
        frame = av.VideoFrame.from_ndarray(self._shown, format="yuv420p")  # a frame per send
        frame.pts = round(n * VIDEO_CLOCK_RATE / self.playback_fps)
        frame.time_base = VIDEO_TIME_BASE
        self.stats.frames_played += 1
        return frame

    def _next_source_frame(self) -> np.ndarray:
        if self.live_requested and not self.live_active:
            if self._queue and (len(self._queue) >= self.prebuffer or self.generation_complete):
                self.live_active = True
            elif self.generation_complete:  # an utterance that made no frame at all
                self._back_to_idle()
        if self.live_active:
            if self._queue:
                live = self._queue.popleft()
                self.live_released += 1
                self.stats.live_frames_played += 1
                self._position = live.cycle
                self.sync.mark(live.index / self.fps)
                return live.planes()
            if self.generation_complete:
                self._back_to_idle()
            elif self._shown is not None:
                self.stats.repeated_live_frames += 1  # the feed is late: hold the last frame
                return self._shown
        self.stats.idle_frames_played += 1
        if self._shown is not None and not self.live_active:
            self._position = (self._position + 1) % len(self.idle)
        return self.idle.planes(self._position)

    def _back_to_idle(self) -> None:
        was_live = self.live_active or self.live_requested
        self.live_active = self.live_requested = False
        self.sync.stop()
        if was_live:
            for callback in self._on_idle:
                callback()


# -- audio --------------------------------------------------------------------------------------


def _audio_frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = pts
    frame.time_base = AUDIO_TIME_BASE
    return frame


class SilenceAudioStreamTrack(MediaStreamTrack):
    """20 ms frames of silence, paced in real time."""

    kind = "audio"

    def __init__(
        self, *, clock: Clock = time.monotonic, sleep: Callable[[float], object] = asyncio.sleep
    ) -> None:
        super().__init__()
        self._pacer = _Pacer(1.0 / AUDIO_PTIME, clock, sleep)
        self._silence = np.zeros(AUDIO_SAMPLES, dtype=np.int16)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self._pacer.wait()
        return _audio_frame(self._next_samples(), n * AUDIO_SAMPLES)

    def _next_samples(self) -> np.ndarray:
        return self._silence


@dataclass
class AudioStats:
    live_frames: int = 0  # 20 ms frames of the utterance sent
    held_frames: int = 0  # silence sent because the audio led the video
    skipped_samples: int = 0  # dropped because the audio lagged the video
    last_offset: float | None = None  # audio time - video time when last measured (s)


class SyncedAudioStreamTrack(SilenceAudioStreamTrack):
    """The session's audio: silence, or an utterance paced against a :class:`VideoSyncClock`
    (see the module's docstring). ``play`` takes mono s16 PCM at 48 kHz."""

    def __init__(
        self,
        sync: VideoSyncClock,
        *,
        max_lead: float = 0.08,
        max_lag: float = 0.12,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], object] = asyncio.sleep,
    ) -> None:
        super().__init__(clock=clock, sleep=sleep)
        self.sync = sync
        self.max_lead = max_lead
        self.max_lag = max_lag
        self.stats = AudioStats()
        self._pcm: np.ndarray | None = None
        self._offset = 0  # the next sample of the utterance to send

    @property
    def playing(self) -> bool:
        return self._pcm is not None

    def play(self, pcm: np.ndarray) -> None:
        self._pcm = np.ascontiguousarray(pcm, dtype=np.int16).reshape(-1)
        self._offset = 0

    def stop(self) -> None:
        self._pcm = None

    def _next_samples(self) -> np.ndarray:
        if self._pcm is None:
            return self._silence
        video = self.sync.video_time()
        if video is None or not self.sync.active:  # no live frame on screen: wait for it
            return self._silence
        audio = self._offset / AUDIO_RATE
        offset = audio - video
        self.stats.last_offset = offset
        if offset > self.max_lead:
            self.stats.held_frames += 1
            return self._silence
        if -offset > self.max_lag:
            skip = int((video - audio) * AUDIO_RATE)
            self._offset += skip
            self.stats.skipped_samples += skip
        chunk = self._pcm[self._offset : self._offset + AUDIO_SAMPLES]
        self._offset += AUDIO_SAMPLES
        if len(chunk) < AUDIO_SAMPLES:
            self._pcm = None  # the utterance is over
            chunk = np.concatenate([chunk, self._silence[: AUDIO_SAMPLES - len(chunk)]])
        self.stats.live_frames += 1
        return chunk


def decode_pcm(source: str | Path | BinaryIO) -> np.ndarray:
    """An audio file (a path or an open binary file) as mono s16 PCM at 48 kHz (the
    WebRTC/Opus rate)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
    parts: list[np.ndarray] = []
    opened = av.open(source if not isinstance(source, str | Path) else str(source), mode="r")
    with opened as container:
        if not container.streams.audio:
            raise ValueError("the file has no audio stream")
        for frame in container.decode(audio=0):
            parts.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
    parts.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
