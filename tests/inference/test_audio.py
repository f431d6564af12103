from __future__ import annotations

import math
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from inference.audio import (
    AudioFeatures,
    extract_audio_features,
    frame_count,
    load_audio,
    positional_encoding,
    whisper_features,
    whisper_step_count,
    window_features,
)
from inference.errors import MediaError
from inference.models import MuseTalkModels
from tests.media import SHARED_MEDIA

MEDIA = SHARED_MEDIA


def _write_tone(
    path: Path, codec: str, rate: int, channels: int, seconds: float, freq: float = 440.0
) -> None:
    """A sine tone of amplitude 0.4 on every channel, encoded with PyAV."""
    t = np.arange(int(rate * seconds)) / rate
    data = np.tile((0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), (channels, 1))
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        for start in range(0, data.shape[1], 1024):
            block = np.ascontiguousarray(data[:, start : start + 1024])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _peak_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / 16000)[spectrum.argmax()])


def _coded_features(steps: int) -> torch.Tensor:
    """(steps, 5, 384) with value 1000*(t+1) + layer everywhere: step and layer are readable."""
    t = torch.arange(steps, dtype=torch.float32)[:, None, None]
    layer = torch.arange(5, dtype=torch.float32)[None, :, None]
    return (1000 * (t + 1) + layer).expand(steps, 5, 384).clone()


@pytest.mark.parametrize(
    ("name", "codec", "rate", "channels"),
    [
        ("tone.wav", "pcm_s16le", 16000, 1),
        ("tone.mp3", "libmp3lame", 44100, 2),
        ("tone.m4a", "aac", 48000, 2),
        ("tone.ogg", "libopus", 48000, 2),
        ("tone.flac", "flac", 22050, 1),
        ("stereo44k.wav", "pcm_s16le", 44100, 2),
        ("stereo48k.wav", "pcm_s16le", 48000, 2),
    ],
)
def test_it_decodes_any_format_to_16k_mono(
    tmp_path: Path, name: str, codec: str, rate: int, channels: int
) -> None:
    path = tmp_path / name
    _write_tone(path, codec, rate, channels, seconds=2.0)
    samples = load_audio(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / 16000 == pytest.approx(2.0, abs=0.03)
    assert _peak_frequency(samples) == pytest.approx(440.0, abs=1.0)
    # channels are averaged (librosa's to_mono), so the tone keeps its 0.4 amplitude
    rms = float(np.sqrt(np.mean(samples[4000:-4000] ** 2)))
    assert rms == pytest.approx(0.4 / math.sqrt(2), rel=0.08)


@pytest.mark.parametrize(
    ("name", "seconds"), [("eng.wav", 60.0), ("sun.wav", 22.489), ("yongen.wav", 8.0)]
)
def test_it_decodes_the_real_media_with_their_durations(name: str, seconds: float) -> None:
    samples = load_audio(MEDIA / name)
    assert len(samples) / 16000 == pytest.approx(seconds, abs=0.002)
    assert 0.1 < np.abs(samples).max() <= 1.0


def test_it_raises_media_error_for_files_that_are_not_audio(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all\n" * 50)
    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    for path in (garbage, text, empty, tmp_path / "absent.wav"):
        with pytest.raises(MediaError):
            load_audio(path)


def test_it_raises_media_error_for_a_video_without_audio() -> None:
    with pytest.raises(MediaError, match="no audio stream"):
        load_audio(MEDIA / "sun.mp4")


def test_it_raises_media_error_for_an_empty_audio_track(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    with wave.open(str(path), "wb") as writer:  # a valid header with zero frames
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
    with pytest.raises(MediaError, match="empty"):
        load_audio(path)


def test_it_builds_the_sinusoidal_positional_encoding() -> None:
    pe = positional_encoding()
    assert pe.shape == (5000, 384) and pe.dtype == torch.float32
    p = np.arange(50)[:, None]
    omega = 10000.0 ** (-2 * np.arange(192) / 384)
    np.testing.assert_allclose(pe[:50, 0::2].numpy(), np.sin(p * omega), atol=1e-5)
    np.testing.assert_allclose(pe[:50, 1::2].numpy(), np.cos(p * omega), atol=1e-5)


@pytest.mark.parametrize(
    ("n_samples", "fps", "frames"),
    [(64000, 25, 100), (48123, 30, 90), (80000, 29.97, 145), (16000, 60, 60), (1600, 25, 2)],
)
def test_it_makes_one_window_per_video_frame(n_samples: int, fps: float, frames: int) -> None:
    features = _coded_features(whisper_step_count(n_samples))
    chunks = window_features(features, n_samples=n_samples, fps=fps)
    assert chunks.shape == (frames, 50, 384)
    assert frame_count(n_samples, fps) == frames


def test_it_takes_steps_2f_minus_4_to_2f_plus_5_at_25_fps() -> None:
    features = _coded_features(200)  # 4.0 s: the spec's worked example
    chunks = window_features(features, n_samples=64000, fps=25)
    for frame in (0, 1, 2, 50, 97, 99):
        tokens = chunks[frame, :, 0]  # (50,): token k = (step k // 5, layer k % 5)
        for k in range(50):
            step = 2 * frame - 4 + k // 5
            expected = 1000 * (step + 1) + k % 5 if 0 <= step < 200 else 0.0
            assert tokens[k].item() == expected, (frame, k)


@pytest.mark.parametrize("fps", [24, 29.97, 30, 50, 60])
def test_it_follows_the_spec_window_formula_at_other_rates(fps: float) -> None:
    n_samples = 3 * 16000 + 777
    steps = whisper_step_count(n_samples)
    chunks = window_features(_coded_features(steps), n_samples=n_samples, fps=fps)
    per_frame = 50 / int(fps)
    for frame in range(chunks.shape[0]):
        first = math.floor(frame * per_frame) - 2 * math.ceil(per_frame)
        got = chunks[frame, ::5, 0]  # layer 0 of each of the 10 steps
        expected = [1000 * (s + 1) if 0 <= s < steps else 0.0 for s in range(first, first + 10)]
        assert got.tolist() == expected, frame


def test_it_pads_very_short_audio_with_full_zero_windows() -> None:
    features = _coded_features(5)  # 0.1 s: shorter than upstream's padding [quirk]
    chunks = window_features(features, n_samples=1600, fps=25)
    assert chunks[0, :20].abs().sum() == 0  # steps -4..-1
    assert chunks[1, 20:].reshape(6, 5, 384)[:, 0, 0].tolist() == [3000, 4000, 5000, 0, 0, 0]


def test_it_encodes_whisper_features_per_20_ms(tiny_models: MuseTalkModels) -> None:
    samples = np.random.default_rng(0).standard_normal(16000 * 2 + 500).astype(np.float32) * 0.1
    features = whisper_features(tiny_models, samples)
    assert features.shape == (whisper_step_count(len(samples)), 5, 384)
    assert not torch.equal(features[:, 0], features[:, 4])


def test_it_pads_each_segment_to_30_seconds(tiny_models: MuseTalkModels) -> None:
    samples = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    padded = np.concatenate([samples, np.zeros(480000 - 16000, dtype=np.float32)])
    assert torch.equal(
        whisper_features(tiny_models, samples), whisper_features(tiny_models, padded)[:50]
    )


def test_it_encodes_each_30_second_segment_on_its_own(tiny_models: MuseTalkModels) -> None:
    samples = np.random.default_rng(2).standard_normal(16000 * 35).astype(np.float32) * 0.1
    features = whisper_features(tiny_models, samples)
    assert features.shape == (1750, 5, 384)
    first = whisper_features(tiny_models, samples[:480000])
    second = whisper_features(tiny_models, samples[480000:])
    torch.testing.assert_close(features[:1500], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features[1500:], second, atol=1e-5, rtol=1e-5)


def test_it_extracts_features_of_a_long_real_recording(tiny_models: MuseTalkModels) -> None:
    result = extract_audio_features(tiny_models, MEDIA / "eng.wav", fps=25)
    assert isinstance(result, AudioFeatures)
    assert (result.n_samples, result.duration_s, result.frame_count) == (960000, 60.0, 1500)
    assert result.chunks.shape == (1500, 50, 384) and result.sample_rate == 16000
    assert result.chunks[-1].abs().sum() > 0  # the second 30 s segment was encoded


def test_it_extracts_features_from_samples(tiny_models: MuseTalkModels) -> None:
    samples = np.zeros(16000 * 4, dtype=np.float32)
    result = extract_audio_features(tiny_models, samples, fps=25)
    assert result.chunks.shape == (100, 50, 384) and result.frame_count == 100
    assert result.samples is not None and result.fps == 25


def _noise(n_samples: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n_samples).astype(np.float32) * 0.1


def _upstream_steps(n_samples: np.ndarray) -> np.ndarray:
    """Upstream's trim, ``math.floor((n / sr) * audio_fps)``, in float64 like Python's floats."""
    return np.floor(n_samples / 16000 * 50).astype(np.int64)


@pytest.mark.parametrize(("n_samples", "steps"), [(9280, 28), (18240, 56), (36160, 112)])
def test_it_keeps_upstreams_step_count_where_float_rounding_drops_one(
    tiny_models: MuseTalkModels, n_samples: int, steps: int
) -> None:
    assert n_samples // 320 == steps + 1  # the exact count is one more
    assert whisper_step_count(n_samples) == steps
    assert whisper_features(tiny_models, _noise(n_samples)).shape[0] == steps


def test_its_step_count_follows_upstreams_formula_over_a_sweep_of_lengths() -> None:
    lengths = np.arange(1, 5_000_000, dtype=np.int64)
    upstream = _upstream_steps(lengths)
    rounded_down = lengths[upstream != lengths // 320]
    assert 500 < len(rounded_down) < 5000  # the sweep meets the lengths where the rules differ
    sample = np.concatenate([rounded_down, lengths[::997], rounded_down + 1, rounded_down - 1])
    for n in sample.tolist():
        assert whisper_step_count(n) == _upstream_steps(np.array(n)), n
        assert frame_count(n, 25) == math.floor(n / 16000 * 25), n


def test_it_zeroes_the_tokens_upstream_zeroes_for_such_lengths(
    tiny_models: MuseTalkModels,
) -> None:
    result = extract_audio_features(tiny_models, _noise(9280), fps=25)
    assert result.frame_count == 14
    last = result.chunks[13].reshape(10, 5, 384)  # steps 2*13-4 = 22 .. 31
    assert (last[:6].abs().sum(dim=(1, 2)) > 0).all()  # steps 22..27: the audio's 28 steps
    assert last[6:].abs().sum() == 0  # step 28 on: zero padding, as upstream
