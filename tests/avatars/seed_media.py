"""Media the seed's clients send: its sample audio is an MP3 named ``.mpga``."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from tests.media import speech_samples


def make_speech_mp3(path: str | Path, *, seconds: float = 1.0, sample_rate: int = 24000) -> Path:
    """A real MP3 (MPEG-1/2 layer III) of speech-like audio, under whatever name ``path`` has."""
    path = Path(path)
    samples = speech_samples(seconds, sample_rate)
    with av.open(str(path), mode="w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def mp4_frames(data: bytes, folder: Path) -> tuple[int, int, int]:
    """(frame count, width, height) of an MP4 given as bytes."""
    path = folder / "probe.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    height, width = frames[0].shape[:2]
    return len(frames), width, height


def is_mostly(frame: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.abs(frame.astype(int) - np.array(colour)).mean() < 40)
