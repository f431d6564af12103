"""Video and audio file I/O with PyAV only (no ffmpeg command line).

Frames are numpy arrays in OpenCV order: ``(H, W, 3)`` uint8 BGR. Rotation metadata (the
display matrix phones write) is honoured on read: frames come back upright, and ``rotation`` is
the clockwise angle in degrees (0, 90, 180, 270) that was applied, like the legacy ``rotate`` tag.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import av
import cv2
import numpy as np

from inference.errors import MediaError

logger = logging.getLogger(__name__)

AUDIO_INPUT_RATE = 16000  # the engine's audio rate (spec §5.1)
AUDIO_OUTPUT_RATE = 48000  # AAC frames are 1024 samples: 21 ms at 48 kHz, under one video frame
DEFAULT_FPS = 25.0
# Real audio fed around a chunk (input-rate samples): AAC codes overlapping 1024-sample
# windows, so the first and last frames of a chunk encoded on its own are shaped by whatever
# surrounds them. Real neighbours there (instead of the encoder's silence) make every chunk
# decode to the true waveform right up to its edges; the edit list hides the extra audio.
AUDIO_PREROLL_SAMPLES = 1024  # 64 ms = three AAC frames at 48 kHz: the packets stay on the grid
AUDIO_TAIL_SAMPLES = 1024  # 64 ms: completes the last frame and the encoder's look-ahead


@dataclass(frozen=True)
class VideoInfo:
    """Header-level facts about a video file; width/height are the upright (displayed) size."""

    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    rotation: int
    has_audio: bool
    codec: str


@dataclass(frozen=True)
class AudioInfo:
    """Header-level facts about the first audio stream of a file."""

    duration_s: float
    sample_rate: int
    channels: int
    codec: str


@dataclass(frozen=True)
class VideoFrames:
    """Decoded upright frames, each ``(H, W, 3)`` uint8 BGR."""

    frames: list[np.ndarray]
    fps: float
    rotation: int


def _open(path: str | Path) -> Any:
    """Open a media file for reading, turning every decoder failure into MediaError."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path.name}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path.name}: the file is empty")
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"{path.name}: not a readable audio/video file ({exc})") from exc


def _clockwise_rotation(display_rotation: float) -> int:
    """Map PyAV's counter-clockwise display-matrix angle to a clockwise 0/90/180/270."""
    return int(round(-display_rotation / 90.0)) * 90 % 360


def _upright(image: np.ndarray, rotation_cw: int) -> np.ndarray:
    """Rotate a decoded frame clockwise by ``rotation_cw`` degrees so it is displayed upright."""
    if rotation_cw == 90:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if rotation_cw == 180:
        return cv2.rotate(image, cv2.ROTATE_180)
    if rotation_cw == 270:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


def _stream_fps(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else DEFAULT_FPS


def _stream_duration(stream: Any, container: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _demuxed_duration(path: str | Path, kind: str) -> float:
    """Seconds spanned by the packets of the first ``kind`` stream, read without decoding:
    for files whose header states no duration (a browser's MediaRecorder WebM)."""
    end = 0.0
    with _open(path) as container:
        stream = getattr(container.streams, kind)[0]
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.time_base is not None:
                    span = packet.pts + (packet.duration or 0)
                    end = max(end, float(span * packet.time_base))
        except av.FFmpegError as exc:
            logger.warning("%s: reading packets stopped: %s", Path(path).name, exc)
        start = stream.start_time
        if start is not None and stream.time_base is not None:
            end -= float(start * stream.time_base)
    return max(end, 0.0)


def _first_frame(container: Any, stream: Any, name: str) -> Any:
    """Decode the first frame of ``stream``; raises MediaError when nothing decodes."""
    try:
        for frame in container.decode(stream):
            return frame
    except av.FFmpegError as exc:
        raise MediaError(f"{name}: the video stream is corrupt ({exc})") from exc
    raise MediaError(f"{name}: the video stream holds no frames")


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's header facts. Only the first frame is decoded (for rotation and to prove
    the stream decodes). Raises MediaError for non-video, corrupt or empty files."""
    name = Path(path).name
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{name}: the file has no video stream")
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        duration = _stream_duration(stream, container) or _demuxed_duration(path, "video")
        frame_count = stream.frames or int(round(duration * fps))
        has_audio = bool(container.streams.audio)
        codec = stream.codec_context.name
        first = _first_frame(container, stream, name)
    rotation = _clockwise_rotation(first.rotation)
    width, height = first.width, first.height
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(width, height, fps, frame_count, duration, rotation, has_audio, codec)


def probe_audio(path: str | Path) -> AudioInfo:
    """Read the first audio stream's header facts; MediaError when there is none."""
    name = Path(path).name
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{name}: the file has no audio stream")
        stream = container.streams.audio[0]
        duration = _stream_duration(stream, container) or _demuxed_duration(path, "audio")
        codec = stream.codec_context.name
        return AudioInfo(duration, int(stream.rate or 0), int(stream.channels), codec)


def read_video(path: str | Path, *, max_frames: int = 0) -> VideoFrames:
    """Decode a video into upright BGR frames ``(H, W, 3)`` uint8; ``max_frames`` 0 reads all.

    Every frame is held in memory (about 1.3 MB per 576x768 frame): bound long inputs with
    ``max_frames``. A decode error after the first frame ends the list early (logged).
    """
    name = Path(path).name
    frames: list[np.ndarray] = []
    rotation = 0
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{name}: the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream)
        try:
            for frame in container.decode(stream):
                rotation = _clockwise_rotation(frame.rotation)
                frames.append(_upright(frame.to_ndarray(format="bgr24"), rotation))
                if max_frames and len(frames) >= max_frames:
                    break
        except av.FFmpegError as exc:
            if not frames:
                raise MediaError(f"{name}: the video stream is corrupt ({exc})") from exc
            logger.warning("%s: decoding stopped after %d frames: %s", name, len(frames), exc)
    if not frames:
        raise MediaError(f"{name}: the video stream holds no frames")
    return VideoFrames(frames=frames, fps=fps, rotation=rotation)


class Mp4Writer:
    """Streams BGR frames (plus optional mono float32 audio) into an H.264 yuv420p + AAC MP4.

    The file is written under a hidden temporary name in the same folder and renamed into place
    by ``close()``, so a reader never sees a half-written file; leaving the ``with`` block on an
    exception deletes the temporary file instead. The audio is trimmed or zero-padded to the
    video length (``frames / fps``) and encoded at 48 kHz, so the two durations agree within
    one video frame. Odd frame sizes are padded by one replicated row/column (yuv420p needs
    even sizes).

    ``audio_context`` is ``(before, after)``: the audio around ``audio`` when the file is one
    chunk of a longer utterance. The encoder then starts and ends on real audio, which the
    MP4 edit list hides, so chunks decoded one by one join without a click, and a player
    that ignores edit lists overlaps chunks with the same audio instead of silence.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float,
        width: int,
        height: int,
        audio: np.ndarray | None = None,
        crf: int = 18,
        tune: str | None = None,
        preset: str | None = None,
        gop: int | None = None,
        audio_context: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if fps <= 0 or width < 1 or height < 1:
            raise ValueError(f"bad video geometry: fps={fps}, width={width}, height={height}")
        self.path = Path(path)
        self.fps = fps
        self.width, self.height = width, height
        self.frames_written = 0
        self._audio = None if audio is None else np.asarray(audio, dtype=np.float32).reshape(-1)
        self._audio_sent = 0
        before, after = audio_context if audio_context is not None else ((), ())
        self._preroll = np.asarray(before, dtype=np.float32).reshape(-1)[-AUDIO_PREROLL_SAMPLES:]
        self._tail = np.asarray(after, dtype=np.float32).reshape(-1)[:AUDIO_TAIL_SAMPLES]
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.part")
        # faststart moves the index to the front so browsers can play while downloading.
        self._container = av.open(
            str(self._tmp), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        self._closed = False
        try:
            self._video = self._add_video_stream(crf=crf, tune=tune, preset=preset, gop=gop)
            self._audio_stream = self._add_audio_stream() if self._audio is not None else None
        except BaseException:
            self.abort()
            raise

    def _add_video_stream(
        self, *, crf: int, tune: str | None, preset: str | None, gop: int | None
    ) -> Any:
        options = {"crf": str(crf)}
        if tune:
            options["tune"] = tune
        if preset:
            options["preset"] = preset
        if gop:
            options.update({"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
        rate = Fraction(self.fps).limit_denominator(1001)
        stream = self._container.add_stream("libx264", rate=rate, options=options)
        stream.width = self.width + self.width % 2
        stream.height = self.height + self.height % 2
        stream.pix_fmt = "yuv420p"
        return stream

    def _add_audio_stream(self) -> Any:
        return self._container.add_stream("aac", rate=AUDIO_OUTPUT_RATE, layout="mono")

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame_bgr: np.ndarray) -> None:
        """Append one ``(height, width, 3)`` uint8 BGR frame."""
        if frame_bgr.shape != (self.height, self.width, 3):
            raise ValueError(
                f"frame shape {frame_bgr.shape} != {(self.height, self.width, 3)} for {self.path}"
            )
        padded = cv2.copyMakeBorder(
            frame_bgr, 0, self.height % 2, 0, self.width % 2, cv2.BORDER_REPLICATE
        )
        # OpenCV types its result as any numeric array; a uint8 frame stays uint8
        pixels = cast("np.ndarray[Any, np.dtype[np.uint8]]", np.ascontiguousarray(padded))
        frame = av.VideoFrame.from_ndarray(pixels, format="bgr24")
        frame.pts = self.frames_written
        self._mux(self._video.encode(frame))
        self.frames_written += 1
        self._send_audio_until(self._audio_target())

    def write_yuv420p(self, planes: np.ndarray) -> None:
        """Append one frame already in planar I420: ``(H'*3//2, W')`` uint8, where H'/W' are
        ``height``/``width`` rounded up to even (``inference.device_blend.bgr_to_yuv420p``).

        Encoded exactly as :meth:`write` encodes a BGR frame (same pts and audio), minus the
        libswscale conversion.
        """
        height, width = self.height + self.height % 2, self.width + self.width % 2
        if planes.shape != (height * 3 // 2, width) or planes.dtype != np.uint8:
            raise ValueError(
                f"yuv420p planes {planes.shape} {planes.dtype} != {(height * 3 // 2, width)} "
                f"uint8 for {self.path}"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(planes), format="yuv420p")
        frame.pts = self.frames_written
        self._mux(self._video.encode(frame))
        self.frames_written += 1
        self._send_audio_until(self._audio_target())

    def _audio_target(self) -> int:
        """Input-rate audio samples that cover the frames written so far."""
        return int(round(self.frames_written * AUDIO_INPUT_RATE / self.fps))

    def _send_audio_until(self, target: int) -> None:
        if self._audio_stream is None or self._audio is None or target <= self._audio_sent:
            return
        if self._audio_sent == 0 and len(self._preroll):
            self._encode_audio(self._preroll, -len(self._preroll))
        chunk = np.zeros(target - self._audio_sent, dtype=np.float32)
        available = self._audio[self._audio_sent : target]
        chunk[: len(available)] = available
        self._encode_audio(chunk, self._audio_sent)
        self._audio_sent = target

    def _encode_audio(self, samples: np.ndarray, pts: int, *, end: float | None = None) -> None:
        assert self._audio_stream is not None  # callers only encode when there is an audio track
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = AUDIO_INPUT_RATE
        # With timestamps the AAC encoder marks its 1024 priming samples (first packet at
        # -1024, earlier with a pre-roll) and the muxer writes an edit list, so the audio
        # starts exactly with the video instead of ~21 ms late; chunks played back to back
        # then stay in sync.
        frame.pts = pts
        frame.time_base = Fraction(1, AUDIO_INPUT_RATE)
        self._mux_audio(self._audio_stream.encode(frame), end)

    def _mux_audio(self, packets: list[Any], end: float | None) -> None:
        """Mux audio packets; past ``end`` (seconds) drop them, and cut the one that
        crosses it, so the track (and its edit list) ends exactly with the video."""
        for packet in packets:
            if end is not None:
                stop = round(end / packet.time_base)
                if packet.pts >= stop:
                    continue
                if packet.duration and packet.pts + packet.duration > stop:
                    packet.duration = stop - packet.pts
            self._container.mux(packet)

    def _mux(self, packets: list[Any]) -> None:
        for packet in packets:
            self._container.mux(packet)

    def close(self) -> Path:
        """Flush the encoders and move the finished file to ``path``; returns ``path``."""
        if self._closed:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise ValueError(f"no frames were written to {self.path}")
        try:
            self._send_audio_until(self._audio_target())
            if self._audio_stream is not None:
                end = self.frames_written / self.fps
                if len(self._tail):
                    self._encode_audio(self._tail, self._audio_sent, end=end)
                self._mux_audio(self._audio_stream.encode(None), end)
            self._mux(self._video.encode(None))
            self._container.close()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the unfinished file; ``path`` is left as it was."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except av.FFmpegError as exc:
            logger.debug("closing an aborted writer for %s: %s", self.path, exc)
        self._tmp.unlink(missing_ok=True)


def write_audio_track(path: str | Path, samples: np.ndarray, *, seconds: float) -> Path:
    """Write ``seconds`` of 16 kHz mono float32 ``samples`` (zero-padded if short) as one
    continuous AAC track in an MP4 (atomically), the way Mp4Writer encodes chunk audio.

    Chunks are encoded one by one; a stream that re-cuts the audio at chunk boundaries (an
    HLS segmenter, which has no edit lists) takes its audio from this track instead, so its
    AAC frames follow each other without gap or overlap across the boundaries.
    """
    path = Path(path)
    count = round(seconds * AUDIO_INPUT_RATE)
    audio = np.zeros(count, dtype=np.float32)
    audio[: min(count, len(samples))] = samples[:count]
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("aac", rate=AUDIO_OUTPUT_RATE, layout="mono")
            frame = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")
            frame.sample_rate = AUDIO_INPUT_RATE
            frame.pts = 0  # timestamps: the muxer writes the edit list for the priming
            frame.time_base = Fraction(1, AUDIO_INPUT_RATE)
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_mp4(
    path: str | Path,
    frames: list[np.ndarray],
    *,
    fps: float,
    audio: np.ndarray | None = None,
) -> Path:
    """Write BGR frames ``(H, W, 3)`` uint8 (and optional 16 kHz mono float32 audio) to an MP4."""
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    height, width = frames[0].shape[:2]
    with Mp4Writer(path, fps=fps, width=width, height=height, audio=audio) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)
