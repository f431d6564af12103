"""Audio features for MuseTalk v1.5 (spec §5): 16 kHz samples -> whisper-tiny hidden states ->
one (50, 384) token window per video frame.

The positional encoding added to those tokens before the UNet (spec §3.5) also lives here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import soxr
import torch

from inference.errors import MediaError

if TYPE_CHECKING:
    from inference.models import MuseTalkModels

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SEGMENT_SAMPLES = 480000  # 30 s: the whisper context (spec §5.1)
STEPS_PER_SECOND = 50  # one whisper step every 20 ms
ENCODER_BATCH = 8  # 30 s segments per encoder call


def load_audio(path: str | PathLike[str]) -> np.ndarray:
    """Decode any audio (or the audio track of a video) to float32 mono at 16 kHz, shape (n,).

    Channels are averaged and the signal is resampled with soxr "HQ", as librosa's
    ``load(path, sr=16000)`` does upstream (spec §5.1). Raises ``MediaError`` when the file
    cannot be read, has no audio stream, or decodes to no samples.
    """
    channels, rate = _decode(Path(path))
    if channels.shape[1] == 0:
        raise MediaError(f"{Path(path).name}: the audio track is empty")
    mono = channels.mean(axis=0, dtype=np.float32)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """All samples of the first audio stream as float32 (channels, n), with its sample rate."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{path.name}: no audio stream")
            return _decode_stream(container, container.streams.audio[0])
    except (av.FFmpegError, OSError, ValueError) as error:
        raise MediaError(f"{path.name}: cannot decode audio ({error})") from error


def _decode_stream(
    container: av.container.InputContainer, stream: av.AudioStream
) -> tuple[np.ndarray, int]:
    """Decode one stream to planar float32 (channels, n), keeping its layout and rate."""
    resampler = av.AudioResampler(format="fltp")  # layout and rate follow the input
    rate = stream.codec_context.sample_rate or stream.sample_rate or SAMPLE_RATE
    parts: list[np.ndarray] = []
    for frame in container.decode(stream):
        rate = frame.sample_rate
        parts.extend(out.to_ndarray() for out in resampler.resample(frame))
    parts.extend(out.to_ndarray() for out in resampler.resample(None))
    if not parts:
        return np.zeros((1, 0), dtype=np.float32), rate
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False), rate


def positional_encoding(d_model: int = 384, max_len: int = 5000) -> torch.Tensor:
    """(max_len, d_model) float32: PE[p, 2i] = sin(p w_i), PE[p, 2i+1] = cos(p w_i),
    w_i = 10000^(-2i/d_model) (spec §3.5). Computed in float32 as upstream does."""
    position = torch.arange(0, max_len, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def steps_at(n_samples: int, per_second: int) -> int:
    """floor(n / 16000 * per_second), evaluated in floating point exactly as upstream does.

    The one rule for both counts cut from an utterance (spec §5.3, §5.4): its whisper steps
    (``per_second`` = 50) and its video frames (``per_second`` = int(fps)). Rounding makes it one
    less than the exact ``n * per_second // 16000`` for some lengths (9280 samples: 28 steps, not
    29); upstream zeroes that step, so it is zero here too.
    """
    return math.floor(n_samples / SAMPLE_RATE * per_second)


def whisper_step_count(n_samples: int) -> int:
    """A = floor(n / 16000 * 50): the whisper steps kept for ``n_samples`` (spec §5.3)."""
    return steps_at(n_samples, STEPS_PER_SECOND)


def whisper_features(models: MuseTalkModels, samples: np.ndarray) -> torch.Tensor:
    """samples (n,) float32 16 kHz -> features (A, 5, 384) on the models' device, with
    A = :func:`whisper_step_count` (n).

    The waveform is cut into 30 s segments, each zero-padded to 30 s and turned into an
    (80, 3000) log-mel; the encoder sees each segment on its own (spec §5.2, §5.3). The 5 hidden
    states (embedding output, layers 1-3, layer 4 after the final LayerNorm) are stacked.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError(f"samples must be a non-empty 1-D array, got shape {samples.shape}")
    segments = [samples[i : i + SEGMENT_SAMPLES] for i in range(0, len(samples), SEGMENT_SAMPLES)]
    parts: list[torch.Tensor] = []
    for start in range(0, len(segments), ENCODER_BATCH):
        parts.append(_encode_segments(models, segments[start : start + ENCODER_BATCH]))
    features = torch.cat(parts, dim=0)
    return features[: whisper_step_count(len(samples))]


def _encode_segments(models: MuseTalkModels, segments: list[np.ndarray]) -> torch.Tensor:
    """Up to ``ENCODER_BATCH`` segments -> (S * 1500, 5, 384)."""
    mel = models.feature_extractor(
        segments,
        sampling_rate=SAMPLE_RATE,
        padding="max_length",
        max_length=SEGMENT_SAMPLES,
        return_tensors="pt",
    ).input_features  # (S, 80, 3000); zero-padded at the waveform level
    with torch.inference_mode():
        mel = mel.to(device=models.device, dtype=models.dtype)
        output = models.whisper_encoder(mel, output_hidden_states=True)
        states = torch.stack(output.hidden_states, dim=2)  # (S, 1500, 5, 384)
    return states.reshape(-1, *states.shape[2:])


def frame_count(n_samples: int, fps: float) -> int:
    """T = floor(n / 16000 * int(fps)), in upstream's float arithmetic (spec §5.4)."""
    return steps_at(n_samples, int(fps))


def window_features(
    features: torch.Tensor, *, n_samples: int, fps: float, left: int = 2, right: int = 2
) -> torch.Tensor:
    """features (A, 5, 384) -> chunks (T, 2*(left+right+1)*5, 384): (T, 50, 384) by default.

    With m = 50/int(fps) and P = ceil(m), the features get P*left zero steps in front and
    P*3*right behind; frame f takes padded steps [floor(f*m), floor(f*m)+10), flattened
    time-major (token k = step k // 5, layer k % 5). Spec §5.4.

    Upstream copies the zero padding from slices of the features, so audio shorter than the
    padding (about 0.24 s) gets shorter padding [quirk]. Here the padding always has its full
    length: every frame gets a full window, and nothing changes for longer audio.
    """
    if features.ndim != 3:
        raise ValueError(f"features must have shape (A, 5, 384), got {tuple(features.shape)}")
    fps_int = int(fps)  # upstream truncates: 29.97 -> 29 [quirk]
    if fps_int < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    steps_per_frame = STEPS_PER_SECOND / fps_int
    pad = math.ceil(steps_per_frame)
    width = 2 * (left + right + 1)
    front = features.new_zeros((pad * left, *features.shape[1:]))
    # upstream's P*3*R is short of a full window from 50 fps on (P = 1: 6 steps for a window of
    # 10), where it stops with an error; extra zeros change nothing else
    back = features.new_zeros((max(pad * 3 * right, width), *features.shape[1:]))
    padded = torch.cat([front, features, back], dim=0)
    starts = [math.floor(f * steps_per_frame) for f in range(frame_count(n_samples, fps))]
    if not starts:
        return features.new_zeros((0, width * features.shape[1], features.shape[2]))
    index = torch.tensor(starts, device=features.device)[:, None] + torch.arange(
        width, device=features.device
    )
    windows = padded[index]  # (T, width, 5, 384)
    return windows.reshape(len(starts), width * features.shape[1], features.shape[2])


@dataclass
class AudioFeatures:
    """Per-frame audio tokens for one utterance; ``chunks`` is (T, 50, 384) without the PE."""

    chunks: torch.Tensor
    samples: np.ndarray
    n_samples: int
    fps: float
    duration_s: float
    frame_count: int
    sample_rate: int = SAMPLE_RATE


def extract_audio_features(
    models: MuseTalkModels,
    path_or_samples: str | PathLike[str] | np.ndarray,
    fps: float,
    *,
    left: int = 2,
    right: int = 2,
) -> AudioFeatures:
    """A file (any format PyAV reads) or float32 16 kHz mono samples -> ``AudioFeatures``."""
    if isinstance(path_or_samples, np.ndarray):
        samples = np.ascontiguousarray(path_or_samples, dtype=np.float32)
    else:
        samples = load_audio(path_or_samples)
    features = whisper_features(models, samples)
    chunks = window_features(features, n_samples=len(samples), fps=fps, left=left, right=right)
    logger.debug("audio features: %d samples -> %s chunks", len(samples), tuple(chunks.shape))
    return AudioFeatures(
        chunks=chunks,
        samples=samples,
        n_samples=len(samples),
        fps=fps,
        duration_s=len(samples) / SAMPLE_RATE,
        frame_count=chunks.shape[0],
    )
