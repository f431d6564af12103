"""End-to-end engine tests on the ``random-tiny`` profile (random weights, CPU, fp32).

One Engine and one prepared avatar per module; the media are made here (tests/media.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch

from inference.audio import load_audio
from inference.blending import blend_face
from inference.config import PROFILE_RANDOM_TINY, EngineConfig, GenerateConfig, PrepareConfig
from inference.errors import InferenceError
from inference.media import write_mp4
from inference.models import predict_latents
from inference.pipeline import Engine
from inference.preparation import PreparedAvatar, load_avatar, prepare_avatar
from inference.vae import decode_latents
from tests.media import decode_audio, make_face_video, make_speech_wav, tone

FPS = 25
SPEECH_SECONDS = 1.5
FRAME_SIZE = (192, 240)  # (w, h): small, even, the face about 40% of the width
AVATAR_FRAMES = 10
SHORT = 12  # frames of the short utterance used where many runs are needed

Frames = list[np.ndarray]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline-media")
    return {
        "video": make_face_video(root / "face.mp4", seconds=1.0, fps=FPS, size=FRAME_SIZE),
        "speech": make_speech_wav(root / "speech.wav", seconds=SPEECH_SECONDS),
    }


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = Engine.from_config(EngineConfig(profile=PROFILE_RANDOM_TINY, seed=0))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def avatar_dir(
    engine: Engine, media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("pipeline-avatars") / "astro"
    config = PrepareConfig(batch_size=5, max_frames=AVATAR_FRAMES, idle_video=False)
    engine.prepare(media["video"], out, config=config)
    return out


@pytest.fixture(scope="module")
def short_audio(media: dict[str, Path]) -> np.ndarray:
    """The first SHORT frames' worth of the speech (plus a quarter frame), 16 kHz float32."""
    return load_audio(media["speech"])[: SHORT * 640 + 160]


@pytest.fixture(scope="module")
def generated(
    engine: Engine,
    avatar_dir: Path,
    media: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    out = tmp_path_factory.mktemp("pipeline-out") / "talk.mp4"
    engine.generate_file(avatar_dir, media["speech"], out, config=GenerateConfig(batch_size=8))
    return out


@pytest.fixture(scope="module")
def reference_frames(engine: Engine, avatar_dir: Path, short_audio: np.ndarray) -> Frames:
    """``generate`` at batch 8 on the short utterance, collected before any encoding."""
    return list(engine.generate(avatar_dir, short_audio, config=GenerateConfig(batch_size=8)))


def _decode(path: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    """All frames (BGR) of an MP4 plus its stream facts."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        facts: dict[str, Any] = {
            "fps": float(video.average_rate),
            "video_s": float(video.duration * video.time_base),
        }
        if container.streams.audio:
            audio = container.streams.audio[0]
            facts["audio_s"] = float(audio.duration * audio.time_base)
            facts["audio_codec"] = audio.codec_context.name
        frames = [frame.to_ndarray(format="bgr24") for frame in container.decode(video)]
    return frames, facts


def _full_mask(avatar: PreparedAvatar, j: int) -> np.ndarray:
    """Stored frame ``j``'s blend mask placed on the whole frame (0 outside the crop box)."""
    height, width = avatar.frames[j].shape[:2]
    full = np.zeros((height, width), dtype=np.uint8)
    xs, ys, xe, ye = avatar.mask_boxes[j]
    x1, y1, x2, y2 = max(xs, 0), max(ys, 0), min(xe, width), min(ye, height)
    full[y1:y2, x1:x2] = avatar.masks[j][y1 - ys : y2 - ys, x1 - xs : x2 - xs]
    return full


def _upper_crop(avatar: PreparedAvatar, j: int) -> tuple[slice, slice]:
    """The top 40% of the expanded crop (eyes, nose): the blend must never reach it."""
    xs, ys, xe, ye = avatar.mask_boxes[j]
    height, width = avatar.frames[j].shape[:2]
    bottom = ys + int(0.4 * (ye - ys))
    return slice(max(ys, 0), min(bottom, height)), slice(max(xs, 0), min(xe, width))


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _open_streams(engine: Engine) -> int:
    """Streams still in the engine's scheduler (its model thread stays, idle)."""
    capacity = engine.capacity()
    return int(capacity["active_streams"] + capacity["active_jobs"])


def _cancel_after(count: int) -> tuple[list[int], Callable[[], bool]]:
    calls: list[int] = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > count

    return calls, cancelled


# -- the output file ------------------------------------------------------------------------------


def test_it_writes_one_frame_per_25th_of_a_second_with_aac_audio(generated: Path) -> None:
    frames, facts = _decode(generated)
    expected = math.floor(SPEECH_SECONDS * FPS)

    assert len(frames) == expected
    assert facts["fps"] == FPS
    assert abs(facts["video_s"] - SPEECH_SECONDS) <= 1 / FPS
    assert facts["audio_codec"] == "aac"
    assert abs(facts["audio_s"] - facts["video_s"]) <= 1 / FPS
    assert frames[0].shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)


def test_it_leaves_pixels_outside_the_blend_mask_untouched(
    generated: Path, engine: Engine, avatar_dir: Path, tmp_path: Path
) -> None:
    frames, _ = _decode(generated)
    avatar = engine.avatar(avatar_dir)
    sources = [avatar.frames[avatar.frame_index(i)] for i in range(len(frames))]
    # The H.264 error alone: the untouched source frames through the same encoder settings.
    codec_only, _ = _decode(write_mp4(tmp_path / "source.mp4", sources, fps=FPS, audio=None))
    for i, (frame, source, encoded) in enumerate(zip(frames, sources, codec_only, strict=True)):
        mask = _full_mask(avatar, avatar.frame_index(i))
        keep = mask == 0
        rows, cols = _upper_crop(avatar, avatar.frame_index(i))

        assert keep.mean() > 0.5  # most of the frame is outside the mask
        assert (mask[rows, cols] == 0).all()
        for region in (keep, (rows, cols)):
            error = _mean_abs(frame[region], source[region])
            codec = _mean_abs(encoded[region], source[region])
            # Pasting any face there gives tens of levels; the encoder alone gives ~2.
            assert error < 4.0 and error <= 1.2 * codec + 0.1, (i, error, codec)


def test_it_changes_the_mouth_region(generated: Path, engine: Engine, avatar_dir: Path) -> None:
    frames, _ = _decode(generated)
    avatar = engine.avatar(avatar_dir)
    for i, frame in enumerate(frames):
        j = avatar.frame_index(i)
        blended = _full_mask(avatar, j) >= 250

        assert blended.sum() > 100
        assert _mean_abs(frame[blended], avatar.frames[j][blended]) > 10.0


def test_it_matches_the_avatar_it_loads_from_disk(engine: Engine, avatar_dir: Path) -> None:
    cached = engine.avatar(avatar_dir)
    on_disk = load_avatar(avatar_dir, device="cpu", dtype=engine.models.dtype)

    assert len(cached.frames) == AVATAR_FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(cached.frames, on_disk.frames, strict=True))
    assert cached.mask_boxes == on_disk.mask_boxes


# -- generate ---------------------------------------------------------------------------------


def test_it_yields_the_frames_in_order(
    engine: Engine, avatar_dir: Path, short_audio: np.ndarray, reference_frames: Frames
) -> None:
    avatar = engine.avatar(avatar_dir)
    chunks = engine.audio_features(short_audio, config=GenerateConfig()).chunks
    stored = [avatar.frame_index(i) for i in range(SHORT)]
    # In the reference's own batches of 8: fp32 CPU kernels block the work per batch size, so
    # one batch of 12 may round a pixel differently (the batch-size test bounds that).
    faces: list[np.ndarray] = []
    for start in range(0, SHORT, 8):
        batch = stored[start : start + 8]
        predicted = predict_latents(engine.models, avatar.latents[batch], chunks[start : start + 8])
        faces.extend(decode_latents(engine.models.vae, predicted))

    assert len(reference_frames) == SHORT
    for i, (frame, face) in enumerate(zip(reference_frames, faces, strict=True)):
        j = stored[i]
        box, mask, crop = avatar.face_boxes[j], avatar.masks[j], avatar.mask_boxes[j]
        assert np.array_equal(frame, blend_face(avatar.frames[j], face, box, mask, crop)), i


def test_it_is_deterministic_for_the_same_inputs(
    engine: Engine, avatar_dir: Path, short_audio: np.ndarray, reference_frames: Frames
) -> None:
    again = list(engine.generate(avatar_dir, short_audio, config=GenerateConfig(batch_size=8)))

    assert len(again) == len(reference_frames)
    assert all(np.array_equal(a, b) for a, b in zip(again, reference_frames, strict=True))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_it_gives_the_same_frames_at_any_batch_size(
    engine: Engine,
    avatar_dir: Path,
    short_audio: np.ndarray,
    reference_frames: Frames,
    batch_size: int,
) -> None:
    config = GenerateConfig(batch_size=batch_size)
    frames = list(engine.generate(avatar_dir, short_audio, config=config))

    assert len(frames) == SHORT
    for i, (a, b) in enumerate(zip(frames, reference_frames, strict=True)):
        # fp32 CPU kernels block the work differently per batch size, so the VAE output can
        # round to the next uint8 level on a few pixels; anything more is a real mismatch.
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert diff.max() <= 1, f"frame {i} differs at batch {batch_size}"
        assert np.count_nonzero(diff) <= 20, f"frame {i} differs at batch {batch_size}"


def _model_inputs(engine: Engine) -> tuple[dict[str, list[torch.Tensor]], Callable[[], None]]:
    """Record what reaches each model's first layer; returns (records, remove hooks)."""
    models = engine.models
    entries = {
        "whisper": models.whisper_encoder.conv1,
        "vae encoder": models.vae.encoder.conv_in,
        "unet": models.unet.conv_in,
        "vae decoder": models.vae.decoder.conv_in,
    }
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in entries}
    hooks = [
        layer.register_forward_pre_hook(lambda _m, args, name=name: seen[name].append(args[0]))
        for name, layer in entries.items()
    ]
    return seen, lambda: [hook.remove() for hook in hooks]


def test_every_model_gets_contiguous_inputs_in_preparation_and_generation(
    engine: Engine, media: dict[str, Path], short_audio: np.ndarray, tmp_path: Path
) -> None:
    seen, remove = _model_inputs(engine)
    try:
        config = PrepareConfig(batch_size=2, max_frames=3, idle_video=False)
        engine.prepare(media["video"], tmp_path / "layouts", config=config)
        frames = engine.generate(tmp_path / "layouts", short_audio, config=GenerateConfig())
        assert len(list(frames)) == SHORT
    finally:
        remove()
    for name, inputs in seen.items():
        assert inputs, f"{name} never ran"
        assert all(x.is_contiguous() for x in inputs), (name, [x.stride() for x in inputs])


def test_it_stops_when_cancelled_and_leaves_the_scheduler(
    engine: Engine, avatar_dir: Path, short_audio: np.ndarray
) -> None:
    frames: list[np.ndarray] = []
    config = GenerateConfig(batch_size=2)
    # cancelled() is polled while the model works, not once per frame: cancel once the
    # consumer holds 3 frames.
    for frame in engine.generate(
        avatar_dir, short_audio, config=config, cancelled=lambda: len(frames) >= 3
    ):
        frames.append(frame)

    assert len(frames) == 3
    assert _open_streams(engine) == 0


def test_it_propagates_an_exception_raised_by_cancelled(
    engine: Engine, avatar_dir: Path, short_audio: np.ndarray
) -> None:
    def cancelled() -> bool:
        raise KeyError("the session went away")

    with pytest.raises(KeyError, match="the session went away"):
        config = GenerateConfig(batch_size=2)
        list(engine.generate(avatar_dir, short_audio, config=config, cancelled=cancelled))
    assert _open_streams(engine) == 0


def test_it_rejects_audio_shorter_than_one_frame(engine: Engine, avatar_dir: Path) -> None:
    with pytest.raises(InferenceError, match="shorter than one video frame") as caught:
        list(engine.generate(avatar_dir, np.zeros(100, np.float32), config=GenerateConfig()))
    assert caught.value.permanent


def test_it_leaves_an_existing_file_and_no_temp_files_when_generation_fails(
    engine: Engine, avatar_dir: Path, short_audio: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "talk.mp4"
    out.write_bytes(b"the previous take")
    _, cancelled = _cancel_after(5)

    with pytest.raises(InferenceError, match="stopped before the last frame"):
        engine.generate_file(
            avatar_dir, short_audio, out, config=GenerateConfig(batch_size=4), cancelled=cancelled
        )
    assert out.read_bytes() == b"the previous take"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4"]
    assert _open_streams(engine) == 0


def test_it_reports_progress_and_timings(
    engine: Engine, avatar_dir: Path, short_audio: np.ndarray, tmp_path: Path
) -> None:
    seen: list[tuple[int, int]] = []
    result = engine.generate_file(
        avatar_dir,
        short_audio,
        tmp_path / "talk.mp4",
        config=GenerateConfig(batch_size=4),
        progress=lambda done, total: seen.append((done, total)),
    )

    assert seen == [(k, SHORT) for k in range(1, SHORT + 1)]
    assert (result.frame_count, result.fps) == (SHORT, FPS)
    assert result.duration_s == pytest.approx(SHORT / FPS)
    assert {"audio_features_s", "unet_s", "vae_decode_s", "total_s"} <= set(result.timings)


# -- chunks -----------------------------------------------------------------------------------


def test_it_writes_playable_chunks_that_add_up_to_the_utterance(
    engine: Engine, avatar_dir: Path, media: dict[str, Path], tmp_path: Path
) -> None:
    config = GenerateConfig(batch_size=8, chunk_seconds=0.4)
    chunks = list(engine.generate_chunks(avatar_dir, media["speech"], tmp_path, config=config))
    total = math.floor(SPEECH_SECONDS * FPS)  # 37 frames: chunks of 10, 10, 10 and 7

    assert len(chunks) == math.ceil(total / 10)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.first_frame for c in chunks] == [10 * k for k in range(len(chunks))]
    counts = []
    for chunk in chunks:
        frames, facts = _decode(chunk.path)
        counts.append(len(frames))
        assert len(frames) == chunk.frame_count
        assert chunk.total_chunks == len(chunks)
        assert abs(facts["audio_s"] - len(frames) / FPS) <= 1 / FPS
        assert abs(facts["video_s"] - len(frames) / FPS) <= 1 / FPS
    assert sum(counts) == total
    assert counts[:-1] == [10] * (len(chunks) - 1)


def test_its_chunks_join_into_the_utterance_audio_without_clicks(
    engine: Engine, avatar_dir: Path, tmp_path: Path
) -> None:
    signal = tone(1.2)  # three chunks of 0.4 s
    config = GenerateConfig(batch_size=8, chunk_seconds=0.4)
    chunks = list(engine.generate_chunks(avatar_dir, signal, tmp_path, config=config))
    played, tails = [], []
    for chunk in chunks:
        samples, duration = decode_audio(chunk.path)
        length = round(duration * 48000)
        played.append(samples[:length])
        tails.append(samples[length:])
    joined = np.concatenate(played)
    reference = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(joined)) / 48000)
    error = np.abs(joined - reference)

    assert [len(p) for p in played] == [19200, 19200, 19200]  # exactly 0.4 s each
    interior = max(error[s + 2048 : s + 17000].max() for s in (0, 19200, 38400))
    for seam in (19200, 38400):
        assert error[seam - 1024 : seam + 1024].max() <= 1.5 * interior + 0.005
    # Past its end a chunk's last AAC frame carries the next chunk's audio, not silence.
    for k, tail in enumerate(tails[:-1]):
        after = reference[19200 * (k + 1) : 19200 * (k + 1) + len(tail)]
        assert len(tail) and np.abs(tail - after).max() < 0.05


def test_it_writes_the_whole_utterance_audio_as_one_track_before_the_first_chunk(
    engine: Engine, avatar_dir: Path, tmp_path: Path
) -> None:
    signal = tone(1.2)
    config = GenerateConfig(batch_size=8, chunk_seconds=0.4)
    chunks = engine.generate_chunks(
        avatar_dir, signal, tmp_path, config=config, audio_track="audio.m4a"
    )
    next(chunks)
    track, duration = decode_audio(tmp_path / "audio.m4a")  # already there
    chunks.close()

    assert duration == 1.2  # the video's length: 30 frames
    reference = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(track)) / 48000)
    # true throughout; the tone is cut at full amplitude at the end, which AAC smears over
    # the last frames: not compared
    assert np.abs(track[:-3072] - reference[:-3072]).max() < 0.05


def test_long_chunks_get_a_key_frame_every_two_seconds(
    engine: Engine, avatar_dir: Path, tmp_path: Path
) -> None:
    config = GenerateConfig(batch_size=8, chunk_seconds=2.4)
    [chunk] = list(engine.generate_chunks(avatar_dir, tone(2.4), tmp_path, config=config))
    with av.open(str(chunk.path)) as container:
        keys = [i for i, packet in enumerate(container.demux(video=0)) if packet.is_keyframe]
    assert chunk.frame_count == 60 and keys == [0, 50]


def test_it_refuses_chunks_without_a_chunk_length(
    engine: Engine, avatar_dir: Path, short_audio: np.ndarray, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="chunk_seconds"):
        list(engine.generate_chunks(avatar_dir, short_audio, tmp_path, config=GenerateConfig()))


# -- the avatar cache -----------------------------------------------------------------------------


def test_it_serves_a_second_generate_from_the_cache(
    engine: Engine, media: dict[str, Path], short_audio: np.ndarray, tmp_path: Path
) -> None:
    avatar = tmp_path / "cached"
    engine.prepare(media["video"], avatar, config=PrepareConfig(max_frames=3, idle_video=False))
    config = GenerateConfig(batch_size=8)
    before = engine.cache.stats()
    list(engine.generate(avatar, short_audio[:2000], config=config))
    middle = engine.cache.stats()
    list(engine.generate(avatar, short_audio[:2000], config=config))
    after = engine.cache.stats()

    assert (middle.misses - before.misses, middle.loads - before.loads) == (1, 1)
    assert (after.hits - middle.hits, after.misses - middle.misses) == (1, 0)
    assert after.loads == middle.loads
    assert str(avatar) in engine.describe()["cache"]["entries"]


def test_it_picks_up_an_avatar_prepared_again_elsewhere(
    engine: Engine, media: dict[str, Path], short_audio: np.ndarray, tmp_path: Path
) -> None:
    avatar = tmp_path / "again"
    engine.prepare(media["video"], avatar, config=PrepareConfig(max_frames=3, idle_video=False))
    assert len(engine.avatar(avatar).frames) == 3
    # Another process (the web app) prepares it again: the engine's cached copy is now stale.
    prepare_avatar(
        media["video"],
        avatar,
        vae=engine.models.vae,
        face_backend=engine.face_backend,
        config=PrepareConfig(max_frames=5, idle_video=False),
    )

    assert len(engine.avatar(avatar).frames) == 5
    frames = list(engine.generate(avatar, short_audio[:2000], config=GenerateConfig()))
    assert [frame.shape for frame in frames] == [(FRAME_SIZE[1], FRAME_SIZE[0], 3)] * 3


def test_it_names_a_folder_that_is_not_an_avatar(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(InferenceError, match="not a prepared avatar") as caught:
        engine.avatar(tmp_path)
    assert caught.value.permanent
