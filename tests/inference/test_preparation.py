from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file

from inference.blending import crop_face
from inference.config import PrepareConfig
from inference.errors import InferenceError, MediaError, NoFaceError
from inference.faces import FaceDetection, OfflineFaceBackend, mean_shape_landmarks
from inference.media import probe_video, read_video
from inference.preparation import (
    AvatarManifest,
    cycle_index,
    load_avatar,
    prepare_avatar,
    reject_outliers,
    resample_indices,
)
from inference.vae import encode_crops
from tests.media import SHARED_MEDIA, make_corrupt_file, make_face_video, make_noface_video

MEDIA = SHARED_MEDIA
MODEL_INFO = {"profile": "random-tiny", "note": "random weights, not a real model"}
FAST = PrepareConfig(batch_size=4, max_frames=6, idle_video=False)


@pytest.fixture(scope="module")
def backend() -> OfflineFaceBackend:
    return OfflineFaceBackend()


@pytest.fixture(scope="module")
def prepared(
    tmp_path_factory: pytest.TempPathFactory, tiny_vae: AutoencoderKL, backend: OfflineFaceBackend
) -> tuple[Path, Path, AvatarManifest, list[tuple[int, str]]]:
    """A 10-frame astronaut avatar with an idle video; returns (video, avatar dir, manifest,
    progress calls)."""
    root = tmp_path_factory.mktemp("prep")
    video = make_face_video(root / "face.mp4", seconds=0.4)
    calls: list[tuple[int, str]] = []
    manifest = prepare_avatar(
        video,
        root / "avatars" / "astro",
        vae=tiny_vae,
        face_backend=backend,
        config=PrepareConfig(batch_size=4),
        progress=lambda percent, stage: calls.append((percent, stage)),
        model_info=MODEL_INFO,
    )
    return video, root / "avatars" / "astro", manifest, calls


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_it_writes_a_complete_avatar(prepared: tuple) -> None:
    _, avatar_dir, manifest, _ = prepared

    assert manifest.format_version == 1
    assert manifest.model == MODEL_INFO
    assert manifest.face_backend == "offline-opencv-haar"
    assert (manifest.fps, manifest.frame_count, manifest.cycle_length) == (25, 10, 20)
    assert (manifest.frame_width, manifest.frame_height) == (256, 320)
    assert manifest.crop["extra_margin"] == 10 and manifest.crop["parsing_mode"] == "jaw"
    assert (manifest.vae_dtype, manifest.latents_dtype) == ("float32", "float32")
    assert manifest.frames_without_face == 0
    on_disk = json.loads((avatar_dir / "manifest.json").read_text())
    assert AvatarManifest.from_dict(on_disk) == manifest
    assert len(list((avatar_dir / "frames").glob("*.png"))) == 10
    assert len(list((avatar_dir / "masks").glob("*.png"))) == 10
    latents = load_file(avatar_dir / "latents.safetensors")["latents"]
    assert latents.shape == (10, 8, 32, 32) and latents.dtype == torch.float32
    assert np.load(avatar_dir / "landmarks.npy").shape == (10, 68, 2)
    assert _leftovers(avatar_dir.parent) == []


def test_it_loads_what_it_prepared(prepared: tuple, tiny_vae: AutoencoderKL) -> None:
    video, avatar_dir, _, _ = prepared

    avatar = load_avatar(avatar_dir, device="cpu", dtype=torch.float32)

    assert avatar.latents.shape == (10, 8, 32, 32) and avatar.latents.dtype == torch.float32
    assert len(avatar.frames) == len(avatar.masks) == len(avatar.face_boxes) == 10
    assert avatar.fps == 25 and avatar.cycle_length == 20
    source = read_video(video).frames
    np.testing.assert_array_equal(avatar.frames[3], source[3])  # lossless PNG frames
    for mask, (x1, y1, x2, y2) in zip(avatar.masks, avatar.mask_boxes, strict=True):
        assert mask.shape == (y2 - y1, x2 - x1) and mask.dtype == np.uint8
        assert mask.max() == 255
    expected = encode_crops(tiny_vae, crop_face(source[3], avatar.face_boxes[3])[None])
    torch.testing.assert_close(avatar.latents[3:4], expected, atol=1e-5, rtol=1e-5)
    assert avatar.nbytes() > sum(frame.nbytes for frame in avatar.frames)


def test_it_puts_the_crop_box_on_the_face(prepared: tuple) -> None:
    _, avatar_dir, _, _ = prepared

    avatar = load_avatar(avatar_dir, device="cpu", dtype=torch.float32)

    # tests/media.py puts the face centre near (128, 134) with a ~100 px wide face.
    for x1, y1, x2, y2 in avatar.face_boxes:
        assert 60 < x1 < 100 and 160 < x2 < 200
        assert 60 < y1 < 110 and 190 < y2 < 240


def test_it_reports_increasing_progress_with_stage_names(prepared: tuple) -> None:
    calls = prepared[3]
    percents = [percent for percent, _ in calls]

    assert percents[0] == 0 and percents[-1] == 100
    assert all(b > a for a, b in zip(percents, percents[1:], strict=False))
    stages = [stage for _, stage in calls]
    for stage in ("reading video", "detecting faces", "encoding latents", "building blend masks",
                  "writing idle video", "done"):  # fmt: skip
        assert stage in stages


def test_it_writes_a_ping_pong_idle_video(prepared: tuple) -> None:
    _, avatar_dir, manifest, _ = prepared

    info = probe_video(avatar_dir / "idle.mp4")
    frames = read_video(avatar_dir / "idle.mp4").frames

    assert manifest.idle_video == "idle.mp4"
    assert (info.frame_count, info.fps, info.codec) == (20, 25.0, "h264")
    assert (info.width, info.height) == (256, 320)
    for k in (0, 4, 9):
        difference = np.abs(frames[k].astype(int) - frames[19 - k].astype(int)).mean()
        assert difference < 3.0


def test_it_maps_the_cycle_forward_then_backward() -> None:
    assert [cycle_index(i, 3) for i in range(13)] == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0]
    assert [cycle_index(i, 1) for i in range(4)] == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        cycle_index(0, 0)


def _detection(x: int, y: int, size: int) -> FaceDetection:
    box = (x, y, x + size, y + size)
    return FaceDetection(box, mean_shape_landmarks(box), "test")


def test_it_drops_detections_that_jump_away_from_their_neighbours() -> None:
    found: list[FaceDetection | None] = [_detection(100 + i, 80, 100) for i in range(9)]
    found[4] = _detection(60, 300, 150)  # a false positive on the clothes
    found[6] = None
    found[7] = _detection(108, 82, 130)  # the same face, a bit larger: kept

    kept = reject_outliers(found)

    assert [d is None for d in kept] == [False] * 4 + [True, False, True, False, False]
    assert kept[7] is found[7]


def test_it_keeps_detections_it_cannot_judge() -> None:
    found = [_detection(0, 0, 50), None, None, None, None, None, _detection(300, 300, 90)]

    assert reject_outliers(found) == found


def test_it_resamples_frame_indices_to_the_target_fps() -> None:
    assert resample_indices(20, 50.0, 25.0) == list(range(0, 20, 2))
    assert resample_indices(5, 12.5, 25.0) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert resample_indices(7, 25.0, 25.0) == list(range(7))


def test_it_resamples_a_50_fps_video_to_25_fps(
    tmp_path: Path, tiny_vae: AutoencoderKL, backend: OfflineFaceBackend
) -> None:
    video = make_face_video(tmp_path / "fast.mp4", seconds=0.24, fps=50)  # 12 frames

    manifest = prepare_avatar(
        video, tmp_path / "a", vae=tiny_vae, face_backend=backend, config=FAST
    )

    assert (manifest.fps, manifest.frame_count) == (25, 6)
    assert manifest.source["fps"] == pytest.approx(50.0)


def test_it_honours_rotation_metadata(
    tmp_path: Path, tiny_vae: AutoencoderKL, backend: OfflineFaceBackend
) -> None:
    video = make_face_video(tmp_path / "phone.mp4", seconds=0.24, rotation=90)

    manifest = prepare_avatar(
        video, tmp_path / "a", vae=tiny_vae, face_backend=backend, config=FAST
    )

    assert manifest.source["rotation"] == 90
    assert (manifest.frame_width, manifest.frame_height) == (256, 320)
    assert manifest.frames_without_face == 0  # sideways, the Haar cascades would miss it


def test_it_carries_the_previous_face_over_frames_without_one(
    tmp_path: Path, tiny_vae: AutoencoderKL, backend: OfflineFaceBackend
) -> None:
    video = make_face_video(tmp_path / "gaps.mp4", seconds=0.24, blank_frames=(0, 3))

    manifest = prepare_avatar(
        video, tmp_path / "a", vae=tiny_vae, face_backend=backend, config=FAST
    )

    boxes = json.loads((tmp_path / "a" / "boxes.json").read_text())
    assert manifest.frames_without_face == 2
    assert boxes["detected"] == [False, True, True, False, True, True]
    landmarks = np.load(tmp_path / "a" / "landmarks.npy")
    np.testing.assert_array_equal(landmarks[0], landmarks[1])  # leading gap: the first face
    np.testing.assert_array_equal(landmarks[3], landmarks[2])  # later gap: the previous face


def test_it_rejects_a_video_where_most_frames_have_no_face(
    tmp_path: Path, tiny_vae: AutoencoderKL, backend: OfflineFaceBackend
) -> None:
    video = make_face_video(tmp_path / "mostly.mp4", seconds=0.24, blank_frames=(0, 1, 2, 4))

    with pytest.raises(NoFaceError, match="only 2 of 6 frames"):
        prepare_avatar(video, tmp_path / "a", vae=tiny_vae, face_backend=backend, config=FAST)
    assert not (tmp_path / "a").exists()


def test_it_raises_no_face_error_and_leaves_nothing_behind(
    tmp_path: Path, tiny_vae: AutoencoderKL, backend: OfflineFaceBackend
) -> None:
    video = make_noface_video(tmp_path / "noface.mp4", seconds=0.24)
    out = tmp_path / "avatars" / "nobody"

    with pytest.raises(NoFaceError) as excinfo:
        prepare_avatar(video, out, vae=tiny_vae, face_backend=backend, config=FAST)

    assert excinfo.value.permanent is True
    assert "no face" in excinfo.value.message
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("kind", ["corrupt", "one-frame"])
def test_it_raises_media_error_for_unusable_files(
    tmp_path: Path, tiny_vae: AutoencoderKL, backend: OfflineFaceBackend, kind: str
) -> None:
    if kind == "corrupt":
        video = make_corrupt_file(tmp_path / "broken.mp4")
    else:
        video = make_face_video(tmp_path / "still.mp4", seconds=0.04)
    out = tmp_path / "avatars" / "x"

    with pytest.raises(MediaError):
        prepare_avatar(video, out, vae=tiny_vae, face_backend=backend, config=FAST)

    assert not out.exists() and list(out.parent.iterdir()) == []


def test_it_keeps_the_old_avatar_when_a_replacement_fails(
    tmp_path: Path, tiny_vae: AutoencoderKL, backend: OfflineFaceBackend
) -> None:
    out = tmp_path / "avatars" / "astro"
    good = make_face_video(tmp_path / "face.mp4", seconds=0.24)
    first = prepare_avatar(good, out, vae=tiny_vae, face_backend=backend, config=FAST)
    before = (out / "manifest.json").read_text()

    with pytest.raises(NoFaceError):
        prepare_avatar(
            make_noface_video(tmp_path / "noface.mp4", seconds=0.24),
            out,
            vae=tiny_vae,
            face_backend=backend,
            config=FAST,
        )

    assert (out / "manifest.json").read_text() == before
    assert load_avatar(out, device="cpu", dtype=torch.float32).manifest == first
    assert _leftovers(out.parent) == []


def test_it_replaces_an_existing_avatar(
    tmp_path: Path, tiny_vae: AutoencoderKL, backend: OfflineFaceBackend
) -> None:
    out = tmp_path / "avatars" / "astro"
    video = make_face_video(tmp_path / "face.mp4", seconds=0.24)
    prepare_avatar(video, out, vae=tiny_vae, face_backend=backend, config=FAST)

    smaller = PrepareConfig(batch_size=4, max_frames=3, idle_video=False)
    manifest = prepare_avatar(video, out, vae=tiny_vae, face_backend=backend, config=smaller)

    assert manifest.frame_count == 3
    assert len(list((out / "frames").glob("*.png"))) == 3
    assert load_avatar(out, device="cpu", dtype=torch.float16).latents.shape[0] == 3
    assert _leftovers(out.parent) == []


def test_it_still_loads_an_avatar_prepared_with_float16_latents(
    prepared: tuple, tmp_path: Path
) -> None:
    _, avatar_dir, _, _ = prepared
    old = tmp_path / "old"
    shutil.copytree(avatar_dir, old)
    latents = load_file(old / "latents.safetensors")["latents"].to(torch.float16)
    save_file({"latents": latents}, old / "latents.safetensors")
    data = json.loads((old / "manifest.json").read_text())
    del data["latents_dtype"]  # the oldest manifests do not name it: they stored float16
    (old / "manifest.json").write_text(json.dumps(data))

    avatar = load_avatar(old, device="cpu", dtype=torch.float32)

    assert avatar.manifest.latents_dtype == "float16"
    assert avatar.latents.dtype == torch.float32
    assert torch.equal(avatar.latents, latents.float())


def test_it_refuses_an_avatar_of_another_format_version(prepared: tuple, tmp_path: Path) -> None:
    _, avatar_dir, _, _ = prepared
    copy = tmp_path / "copy"
    copy.mkdir()
    data = json.loads((avatar_dir / "manifest.json").read_text())
    data["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(data))

    with pytest.raises(InferenceError, match="format version 99"):
        load_avatar(copy, device="cpu", dtype=torch.float32)
    with pytest.raises(InferenceError, match="not a prepared avatar"):
        load_avatar(tmp_path / "missing", device="cpu", dtype=torch.float32)


@pytest.mark.skipif(not (MEDIA / "sun.mp4").exists(), reason="shared demo media not available")
def test_it_finds_the_face_in_every_frame_of_sun_mp4(
    tmp_path: Path, tiny_vae: AutoencoderKL, backend: OfflineFaceBackend
) -> None:
    config = PrepareConfig(batch_size=5, max_frames=10, idle_video=False)

    manifest = prepare_avatar(
        MEDIA / "sun.mp4", tmp_path / "sun", vae=tiny_vae, face_backend=backend, config=config
    )
    avatar = load_avatar(tmp_path / "sun", device="cpu", dtype=torch.float32)

    assert manifest.frame_count == 10 and manifest.frames_without_face == 0
    assert (manifest.frame_width, manifest.frame_height) == (576, 768)
    # Frame 0, measured by hand: the face spans about x 215-340, forehead ~y 165 (hairline
    # 150), chin ~y 305 in the 576x768 frame. The crop box reaches from the forehead to
    # just below the chin (extra_margin 10).
    for x1, y1, x2, y2 in avatar.face_boxes:
        assert 195 < x1 < 235 and 320 < x2 < 360
        assert 140 < y1 < 200 and 300 < y2 < 340


@pytest.mark.skipif(not (MEDIA / "yongen.mp4").exists(), reason="shared demo media not available")
def test_it_prepares_the_anime_face_of_yongen_mp4(
    tmp_path: Path, tiny_vae: AutoencoderKL, backend: OfflineFaceBackend
) -> None:
    """OpenCV's frontal cascade does find this illustrated face (checked on 60 frames)."""
    config = PrepareConfig(batch_size=5, max_frames=5, idle_video=False)

    manifest = prepare_avatar(
        MEDIA / "yongen.mp4", tmp_path / "yongen", vae=tiny_vae, face_backend=backend, config=config
    )
    avatar = load_avatar(tmp_path / "yongen", device="cpu", dtype=torch.float32)

    assert manifest.frames_without_face == 0
    # The drawn face spans about x 215-445 and y 250-520 in the 704x1216 frame.
    for x1, y1, x2, y2 in avatar.face_boxes:
        assert 180 < x1 < 260 and 400 < x2 < 480
        assert 230 < y1 < 330 and 480 < y2 < 560
