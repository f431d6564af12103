"""Small, deterministic test media, generated on the fly (no Django, no ffmpeg CLI).

The face clips animate a real photograph that ships in an installed package
(``skimage.data.astronaut()``, public domain, NASA) so that real face detectors find a face.
Everything is encoded with PyAV directly, independently of ``inference.media``, so the code
under test does not also produce its own test inputs.
"""

from __future__ import annotations

import math
import wave
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# Centre (x, y) and width in pixels of the astronaut's face in the 512x512 photo (Haar box).

# The MuseTalk demo clips (real faces and speech), read-only: beside the checkout as
# ../shared/media, or at the machine's shared folder.
SHARED_MEDIA = next(
    (
        folder
        for folder in (
            Path(__file__).resolve().parent.parent.parent / "shared" / "media",
            Path("/work/shared/media"),
        )
        if folder.is_dir()
    ),
    Path("/work/shared/media"),
)

ASTRONAUT_FACE_CENTER = (223.0, 113.0)
ASTRONAUT_FACE_WIDTH = 93.0

_CODECS = {"h264": "libx264", "mpeg4": "mpeg4"}


def astronaut_bgr() -> np.ndarray:
    """The 512x512 astronaut photo as ``(512, 512, 3)`` uint8 BGR."""
    import skimage.data  # a test-only dependency; imported here to keep module import cheap

    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


def face_frame(t: float, size: tuple[int, int], photo: np.ndarray) -> np.ndarray:
    """One frame at time ``t`` (s): the face slowly pans, zooms and sways.

    The face width is about 40% of the frame width; returns ``(h, w, 3)`` uint8 BGR.
    """
    width, height = size
    scale = 0.4 * width / ASTRONAUT_FACE_WIDTH * (1.0 + 0.05 * math.sin(2 * math.pi * 0.35 * t))
    angle = 4.0 * math.sin(2 * math.pi * 0.6 * t)  # degrees of head sway
    matrix = cv2.getRotationMatrix2D(ASTRONAUT_FACE_CENTER, angle, scale)
    target_x = width * (0.5 + 0.04 * math.sin(2 * math.pi * 0.25 * t))
    target_y = height * (0.42 + 0.02 * math.cos(2 * math.pi * 0.3 * t))
    matrix[0, 2] += target_x - ASTRONAUT_FACE_CENTER[0]
    matrix[1, 2] += target_y - ASTRONAUT_FACE_CENTER[1]
    return cv2.warpAffine(
        photo, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _rotate_for_storage(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Store an upright frame so that a player must turn it ``rotation`` degrees clockwise."""
    if rotation == 90:
        return cv2.rotate(frame, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if rotation == 180:
        return cv2.rotate(frame, cv2.ROTATE_180)
    if rotation == 270:
        return cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
    return frame


def speech_samples(seconds: float, sample_rate: int, seed: int = 7) -> np.ndarray:
    """Speech-like mono float32 audio in [-1, 1]: voiced harmonics under a syllable envelope.

    A gliding pitch (110-190 Hz) drives 24 harmonics shaped by two moving formants; a ~4 Hz
    syllable envelope and random pauses give the on/off rhythm of talking.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = 150 + 40 * np.sin(2 * np.pi * 0.7 * t) + 5 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formant1 = 500 + 250 * np.sin(2 * np.pi * 2.1 * t + rng.uniform(0, 6))
    formant2 = 1500 + 500 * np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6))
    voiced = np.zeros(n)
    for k in range(1, 25):
        fk = k * f0
        gain = np.exp(-(((fk - formant1) / 200) ** 2)) + 0.5 * np.exp(
            -(((fk - formant2) / 300) ** 2)
        )
        voiced += (gain + 0.02) * np.sin(k * phase) / k**0.5
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 0.6
    pauses = np.repeat(rng.random(int(seconds * 2) + 1) > 0.25, int(sample_rate / 2) + 1)[:n]
    signal = voiced * syllables * pauses + 0.003 * rng.standard_normal(n)
    return (0.8 * signal / max(1e-6, float(np.abs(signal).max()))).astype(np.float32)


def make_speech_wav(
    path: str | Path, *, seconds: float = 2.0, sample_rate: int = 16000, channels: int = 1
) -> Path:
    """Write a 16-bit PCM WAV of :func:`speech_samples` (deterministic)."""
    path = Path(path)
    mono = speech_samples(seconds, sample_rate)
    data = np.repeat(mono[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes((data * 32767).astype("<i2").tobytes())
    return path


def _encode_video(
    path: Path,
    frames: list[np.ndarray],
    *,
    fps: float,
    rotation: int,
    audio: np.ndarray | None,
    codec: str,
) -> Path:
    """Encode upright BGR frames, storing them rotated plus a display matrix when asked."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(_CODECS[codec], rate=Fraction(fps).limit_denominator(1001))
        stored = [_rotate_for_storage(frame, rotation) for frame in frames]
        stream.height, stream.width = stored[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(-rotation)  # PyAV takes counter-clockwise degrees
        audio_stream = (
            container.add_stream("aac", rate=16000, layout="mono") if audio is not None else None
        )
        for index, image in enumerate(stored):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio_stream is not None and audio is not None:
            audio_frame = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")
            audio_frame.sample_rate = 16000
            container.mux(audio_stream.encode(audio_frame))
            container.mux(audio_stream.encode(None))
    return path


def make_face_video(
    path: str | Path,
    *,
    seconds: float = 2.0,
    fps: int = 25,
    size: tuple[int, int] = (256, 320),
    rotation: int = 0,
    with_audio: bool = False,
    codec: str = "h264",
    blank_frames: tuple[int, ...] = (),
) -> Path:
    """A clip of the astronaut's moving face; ``size`` is the upright (w, h).

    Frames whose index is in ``blank_frames`` show :func:`noface_frame` instead (no face).

    ``rotation`` (0/90/180/270) is written as display-matrix metadata: the stored frames are
    turned so that a player rotating them ``rotation`` degrees clockwise shows them upright.
    """
    photo = astronaut_bgr()
    count = max(1, int(round(seconds * fps)))
    frames = [
        noface_frame(i / fps, size) if i in blank_frames else face_frame(i / fps, size, photo)
        for i in range(count)
    ]
    audio = speech_samples(count / fps, 16000) if with_audio else None
    return _encode_video(Path(path), frames, fps=fps, rotation=rotation, audio=audio, codec=codec)


def noface_frame(t: float, size: tuple[int, int]) -> np.ndarray:
    """Moving colour gradients and a drifting disc: texture without anything face-like."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 127 + 100 * np.sin(xs / 40 + t)
    green = 127 + 100 * np.cos(ys / 55 - 0.7 * t)
    blue = np.full_like(xs, 90 + 60 * math.sin(t))
    frame = np.clip(np.stack([blue, green, red], axis=-1), 0, 255).astype(np.uint8)
    center = (int(width * (0.3 + 0.2 * math.sin(t))), int(height * 0.6))
    cv2.circle(frame, center, max(4, width // 8), (40, 200, 240), thickness=-1)
    return frame


def make_noface_video(
    path: str | Path, *, seconds: float = 1.0, fps: int = 25, size: tuple[int, int] = (256, 320)
) -> Path:
    """A clip with no face in any frame."""
    count = max(1, int(round(seconds * fps)))
    frames = [noface_frame(i / fps, size) for i in range(count)]
    return _encode_video(Path(path), frames, fps=fps, rotation=0, audio=None, codec="h264")


def make_corrupt_file(path: str | Path) -> Path:
    """Bytes that start like an MP4 (an ``ftyp`` box) and then are garbage."""
    path = Path(path)
    header = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    garbage = np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(header + garbage)
    return path


def tone(
    seconds: float, *, rate: int = 16000, hz: float = 440.0, amplitude: float = 0.5
) -> np.ndarray:
    """A pure sine, float32 mono: any click or gap in it stands out against a fitted sine."""
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def decode_audio(path: str | Path, *, edit_list: bool = True) -> tuple[np.ndarray, float]:
    """The first audio track as mono float32 samples at its own rate, and the track's
    duration in seconds (the edit list's, i.e. what a conforming player plays).

    ``edit_list=False`` also returns the samples the edit list hides at the start.
    """
    options = {} if edit_list else {"ignore_editlist": "1"}
    with av.open(str(path), options=options) as container:
        stream = container.streams.audio[0]
        duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
    return np.concatenate(frames).astype(np.float32), duration
