"""Device paste-back and yuv420p conversion against the CPU path they replace.

Every check runs on the CPU and, where torch sees one, again on a CUDA device. The avatar is
prepared with the ``random-tiny`` VAE (random weights); the synthetic cases cover what a
real clip rarely shows: boxes partly outside the frame, odd frame sizes, and faces pasted
both larger and smaller than the 256-pixel crop.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from inference.avatar_store import PreparedAvatar, load_avatar
from inference.blending import blend_face, expanded_crop_box
from inference.config import PrepareConfig
from inference.device_blend import DeviceBlender, bgr_to_yuv420p
from inference.media import Mp4Writer
from inference.preparation import prepare_avatar
from inference.vae import decode_latents, decode_latents_tensor
from tests.inference.faces_centred import CentredFace
from tests.media import decode_audio, make_face_video, tone

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]
FPS = 25
# (face box) per stored frame of a 181x243 frame: inside, over the top-left corner, over the
# right edge, larger than 256 (upscaled), smaller than 128 (downscaled past 2x), exactly 128.
SYNTHETIC_BOXES = [
    (30, 40, 130, 150),
    (-20, -10, 90, 80),
    (150, 100, 260, 200),
    (-40, -30, 230, 290),
    (100, 90, 160, 140),
    (60, 20, 188, 148),
]


def _synthetic_avatar(height: int, width: int, *, full_masks: bool = False) -> PreparedAvatar:
    """Noise frames and masks (30% zeros, or all 255), crop boxes as preparation makes them."""
    rng = np.random.default_rng(1)
    frames, masks, crops = [], [], []
    for box in SYNTHETIC_BOXES:
        frames.append(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        crop = expanded_crop_box(box)
        mask = rng.integers(0, 256, (crop[3] - crop[1], crop[2] - crop[0]), dtype=np.uint8)
        mask[rng.random(mask.shape) < 0.3] = 0
        masks.append(np.full_like(mask, 255) if full_masks else mask)
        crops.append(crop)
    return PreparedAvatar(
        manifest=None,  # type: ignore[arg-type]  # the blender reads frames, boxes and masks only
        frames=frames,
        latents=torch.zeros(0),
        face_boxes=list(SYNTHETIC_BOXES),
        masks=masks,
        mask_boxes=crops,
        fps=FPS,
    )


def _faces(count: int, seed: int = 2) -> np.ndarray:
    """Smooth-ish random faces (B, 256, 256, 3) uint8: noise alone hides interpolation errors
    less than real images do, so half of each face is blurred."""
    faces = np.random.default_rng(seed).integers(0, 256, (count, 256, 256, 3), dtype=np.uint8)
    for face in faces:
        face[:128] = cv2.GaussianBlur(face[:128], (0, 0), 3)
    return faces


def _assert_matches_blend_face(
    avatar: PreparedAvatar, indices: list[int], faces: np.ndarray, got: np.ndarray
) -> None:
    """Within one level everywhere; exact where the mask is 0 and outside the crop box."""
    for b, j in enumerate(indices):
        frame, crop = avatar.frames[j], avatar.mask_boxes[j]
        expected = blend_face(frame, faces[b], avatar.face_boxes[j], avatar.masks[j], crop)
        diff = np.abs(got[b].astype(np.int16) - expected.astype(np.int16)).max(axis=2)
        assert diff.max() <= 1, f"frame {j}: {diff.max()} levels off"
        blended = np.zeros(frame.shape[:2], dtype=bool)  # mask > 0, in frame coordinates
        xs, ys, xe, ye = crop
        ox1, oy1 = max(xs, 0), max(ys, 0)
        ox2, oy2 = min(xe, frame.shape[1]), min(ye, frame.shape[0])
        blended[oy1:oy2, ox1:ox2] = avatar.masks[j][oy1 - ys : oy2 - ys, ox1 - xs : ox2 - xs] > 0
        assert np.array_equal(got[b][~blended], frame[~blended]), f"frame {j} changed outside"


@pytest.mark.parametrize("device", DEVICES)
def test_it_matches_blend_face_on_synthetic_frames(device: str) -> None:
    avatar = _synthetic_avatar(181, 243)
    blender = DeviceBlender.for_avatar(avatar, torch.device(device))
    indices = [0, 1, 2, 3, 4, 5, 3, 0]  # repeats, out of order
    faces = _faces(len(indices))

    got = blender.blend(indices, torch.from_numpy(faces).to(device))

    assert got.device.type == device and got.dtype == torch.uint8
    assert tuple(got.shape) == (len(indices), 181, 243, 3)
    _assert_matches_blend_face(avatar, indices, faces, got.cpu().numpy())


@pytest.mark.parametrize("device", DEVICES)
def test_its_resize_is_opencvs_bilinear_up_and_down(device: str) -> None:
    """With masks of 255 the blend returns the resized face itself, pasted where blend_face
    pastes ``cv2.resize(face, box size)``."""
    avatar = _synthetic_avatar(181, 243, full_masks=True)
    blender = DeviceBlender.for_avatar(avatar, torch.device(device))
    indices = list(range(len(SYNTHETIC_BOXES)))
    faces = _faces(len(indices), seed=3)

    got = blender.blend(indices, torch.from_numpy(faces).to(device)).cpu().numpy()

    for b, (x1, y1, x2, y2) in enumerate(SYNTHETIC_BOXES):
        resized = cv2.resize(faces[b], (x2 - x1, y2 - y1)).astype(np.int16)
        ox1, oy1, ox2, oy2 = max(x1, 0), max(y1, 0), min(x2, 243), min(y2, 181)
        pasted = got[b, oy1:oy2, ox1:ox2].astype(np.int16)
        diff = np.abs(pasted - resized[oy1 - y1 : oy2 - y1, ox1 - x1 : ox2 - x1])
        assert diff.max() <= 1
        assert (diff == 0).mean() > 0.8  # ~99.9% with OpenCV's SIMD kernels, ~87% without


def test_it_rejects_faces_and_indices_that_do_not_fit() -> None:
    blender = DeviceBlender.for_avatar(_synthetic_avatar(64, 80), torch.device("cpu"))
    faces = torch.zeros((2, 256, 256, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match="faces must be"):
        blender.blend([0, 1], faces.float())
    with pytest.raises(ValueError, match="2 faces"):
        blender.blend([0], faces)
    with pytest.raises(ValueError, match="outside"):
        blender.blend([0, 6], faces)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_vae: AutoencoderKL) -> PreparedAvatar:
    """A 6-frame astronaut avatar prepared with the random-tiny VAE."""
    root = tmp_path_factory.mktemp("device-blend")
    video = make_face_video(root / "face.mp4", seconds=0.24, fps=FPS, size=(192, 240))
    config = PrepareConfig(batch_size=6, idle_video=False)
    prepare_avatar(video, root / "astro", vae=tiny_vae, face_backend=CentredFace(), config=config)
    return load_avatar(root / "astro", device="cpu", dtype=torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_it_matches_blend_face_on_a_prepared_avatar_with_decoded_faces(
    device: str, prepared: PreparedAvatar, tiny_vae: AutoencoderKL
) -> None:
    latents = torch.randn(4, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    faces = decode_latents(tiny_vae, latents)
    indices = [5, 4, 0, 2]
    blender = DeviceBlender.for_avatar(prepared, torch.device(device))

    got = blender.blend(indices, torch.from_numpy(faces).to(device)).cpu().numpy()

    _assert_matches_blend_face(prepared, indices, faces, got)


def test_decoding_to_a_tensor_gives_decode_latents_faces(tiny_vae: AutoencoderKL) -> None:
    latents = torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(1))

    faces = decode_latents_tensor(tiny_vae, latents)

    assert faces.dtype == torch.uint8 and faces.device == tiny_vae.device
    assert np.array_equal(faces.numpy(), decode_latents(tiny_vae, latents))


def _swscale_yuv420p(frame_bgr: np.ndarray) -> np.ndarray:
    """PyAV's (libswscale's) conversion of a frame padded as Mp4Writer pads it."""
    height, width = frame_bgr.shape[:2]
    padded = cv2.copyMakeBorder(frame_bgr, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)
    image = av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="bgr24")
    return np.asarray(image.reformat(format="yuv420p").to_ndarray())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [(64, 96), (66, 98), (67, 97), (181, 243)])
def test_its_yuv420p_matches_libswscale_within_one_level(
    device: str, size: tuple[int, int]
) -> None:
    height, width = size
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    frames[0] = cv2.GaussianBlur(frames[0], (0, 0), 4)
    frames[1, :, : width // 2] = (0, 0, 0)
    frames[1, :, width // 2 :] = (255, 255, 255)

    got = bgr_to_yuv420p(torch.from_numpy(frames).to(device))

    even = (height + height % 2, width + width % 2)
    assert got.dtype == torch.uint8 and tuple(got.shape) == (3, even[0] * 3 // 2, even[1])
    for frame, planes in zip(frames, got.cpu().numpy(), strict=True):
        expected = _swscale_yuv420p(frame)
        assert np.abs(planes.astype(np.int16) - expected.astype(np.int16)).max() <= 1


def _write(path: Path, frames: np.ndarray, audio: np.ndarray, *, planes: str) -> None:
    """Write ``frames`` with ``write`` (planes "none") or ``write_yuv420p`` from PyAV's
    conversion ("swscale") or from :func:`bgr_to_yuv420p` ("device")."""
    height, width = frames.shape[1:3]
    with Mp4Writer(path, fps=FPS, width=width, height=height, audio=audio) as writer:
        for frame in frames:
            if planes == "none":
                writer.write(frame)
            elif planes == "swscale":
                writer.write_yuv420p(_swscale_yuv420p(frame))
            else:
                writer.write_yuv420p(bgr_to_yuv420p(torch.from_numpy(frame[None])).numpy()[0])


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    return np.stack(frames).astype(np.int16)


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, np.ndarray]:
    """12 frames of smooth noise panning right (odd size 163x121), and 0.48 s of tone."""
    rng = np.random.default_rng(5)
    base = cv2.GaussianBlur(rng.integers(0, 256, (121, 163, 3), dtype=np.uint8), (0, 0), 3)
    return np.stack([np.roll(base, 2 * i, axis=1) for i in range(12)]), tone(12 / FPS)


def test_writing_libswscales_planes_gives_the_same_file_as_writing_bgr(
    tmp_path: Path, clip: tuple[np.ndarray, np.ndarray]
) -> None:
    frames, audio = clip
    _write(tmp_path / "bgr.mp4", frames, audio, planes="none")
    _write(tmp_path / "planes.mp4", frames, audio, planes="swscale")

    from_bgr, from_planes = _decode(tmp_path / "bgr.mp4"), _decode(tmp_path / "planes.mp4")
    assert from_bgr.shape == from_planes.shape == (12, 122, 164, 3)
    # Equal inputs encode to equal files, except that x264 in a process that has run torch
    # is not bit-reproducible (~0.01 level on average here); inputs one level apart on a
    # few chroma samples already differ by ~0.9 after coding.
    assert np.abs(from_bgr - from_planes).mean() < 0.1
    audio_bgr, duration_bgr = decode_audio(tmp_path / "bgr.mp4")
    audio_planes, duration_planes = decode_audio(tmp_path / "planes.mp4")
    assert duration_bgr == duration_planes
    assert np.array_equal(audio_bgr, audio_planes)


def test_an_mp4_from_device_planes_is_as_close_to_the_source_as_one_from_bgr(
    tmp_path: Path, clip: tuple[np.ndarray, np.ndarray]
) -> None:
    """Device planes differ from swscale's by at most one level on a few samples, while
    x264 at crf 18 moves pixels by about 2 levels on this clip; so the two files differ by
    coding noise, and each is as far from the source as the other (within a tenth)."""
    frames, audio = clip
    _write(tmp_path / "bgr.mp4", frames, audio, planes="none")
    _write(tmp_path / "device.mp4", frames, audio, planes="device")

    source = np.pad(frames, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge").astype(np.int16)
    from_bgr, from_device = _decode(tmp_path / "bgr.mp4"), _decode(tmp_path / "device.mp4")
    assert from_bgr.shape == from_device.shape == (12, 122, 164, 3)
    error_bgr = np.abs(from_bgr - source).mean()
    error_device = np.abs(from_device - source).mean()
    assert error_device < 1.1 * error_bgr
    assert np.abs(from_device - from_bgr).mean() < error_bgr


def test_writing_planes_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    with Mp4Writer(tmp_path / "x.mp4", fps=FPS, width=63, height=47) as writer:
        writer.write_yuv420p(np.zeros((72, 64), dtype=np.uint8))
        with pytest.raises(ValueError, match="yuv420p planes"):
            writer.write_yuv420p(np.zeros((70, 63), dtype=np.uint8))
    assert (tmp_path / "x.mp4").is_file()
