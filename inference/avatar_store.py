"""A prepared avatar on disk: its file layout, manifest, atomic install and loading.

The layout is described in :mod:`inference.preparation`, which writes it; the real-time
engine only reads it (:func:`load_avatar`).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.torch import load_file

from inference.blending import Box
from inference.errors import InferenceError
from inference.media import Mp4Writer

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LATENTS = "latents.safetensors"
BOXES = "boxes.json"
LANDMARKS = "landmarks.npy"
IDLE_VIDEO = "idle.mp4"
# Latents are stored as float32, as upstream's float32 path keeps them (32 KB a frame); the
# engine casts them to its own dtype when it loads the avatar. Avatars prepared before this
# stored float16 and say so in their manifest; they load the same way.
LATENTS_DTYPE = torch.float32


@dataclass(frozen=True)
class AvatarManifest:
    """What a prepared avatar is and how it was made (stored as manifest.json)."""

    format_version: int
    created_at: str
    model: dict[str, Any]
    face_backend: str
    fps: int
    frame_count: int
    frame_width: int
    frame_height: int
    crop: dict[str, Any]
    vae_dtype: str
    latents_dtype: str = "float16"  # what manifests without the key stored
    frames_without_face: int = 0
    idle_video: str | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def cycle_length(self) -> int:
        return 2 * self.frame_count

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AvatarManifest:
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class PreparedAvatar:
    """A loaded avatar: N frames (H, W, 3) uint8 BGR, latents (N, 8, 32, 32), per-frame boxes
    and crop-box-sized uint8 masks. Index any of them with :meth:`frame_index`."""

    manifest: AvatarManifest
    frames: list[np.ndarray]
    latents: torch.Tensor
    face_boxes: list[Box]
    masks: list[np.ndarray]
    mask_boxes: list[Box]
    fps: int

    @property
    def cycle_length(self) -> int:
        return 2 * len(self.frames)

    def frame_index(self, i: int) -> int:
        """Stored frame index of output frame ``i`` of the ping-pong cycle."""
        return cycle_index(i, len(self.frames))

    def nbytes(self) -> int:
        """Approximate memory held by the arrays and the latents tensor."""
        arrays = sum(frame.nbytes for frame in self.frames) + sum(m.nbytes for m in self.masks)
        return arrays + self.latents.numel() * self.latents.element_size()


def cycle_index(i: int, n: int) -> int:
    """Map output frame ``i`` onto N stored frames of a forward+reverse cycle of length 2N.

    ``i % 2N`` when that is below N, else ``2N - 1 - (i % 2N)``: 0..N-1, N-1..0, 0..
    """
    if n < 1:
        raise ValueError(f"a cycle needs at least one frame, got n={n}")
    position = i % (2 * n)
    return position if position < n else 2 * n - 1 - position


def write_images(folder: Path, images: list[np.ndarray]) -> None:
    folder.mkdir()
    for index, image in enumerate(images):
        if not cv2.imwrite(str(folder / f"{index:08d}.png"), image):
            raise OSError(f"could not write {folder / f'{index:08d}.png'}")


def write_idle_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """The ping-pong loop 0..N-1, N-1..0 as H.264."""
    height, width = frames[0].shape[:2]
    with Mp4Writer(path, fps=fps, width=width, height=height, crf=20) as writer:
        for i in range(2 * len(frames)):
            writer.write(frames[cycle_index(i, len(frames))])


def install_folder(staging: Path, out_dir: Path) -> None:
    """Move a finished avatar folder into place, replacing an existing one atomically.

    Each step is a rename within one parent folder: the old avatar is renamed aside, the new
    one renamed in (the old one is put back if that fails), then the old one is deleted.
    """
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    retired = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(out_dir, retired)
    try:
        os.rename(staging, out_dir)
    except OSError:
        os.rename(retired, out_dir)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _read_images(folder: Path, count: int, flags: int) -> list[np.ndarray]:
    images = []
    for index in range(count):
        image = cv2.imread(str(folder / f"{index:08d}.png"), flags)
        if image is None:
            raise InferenceError(
                f"avatar file {folder.name}/{index:08d}.png is missing or unreadable",
                permanent=True,
            )
        images.append(image)
    return images


def _as_box(values: list[int]) -> Box:
    x1, y1, x2, y2 = (int(v) for v in values)
    return (x1, y1, x2, y2)


def _read_manifest(avatar_dir: Path) -> AvatarManifest:
    path = avatar_dir / MANIFEST
    if not path.is_file():
        raise InferenceError(
            f"{avatar_dir.name} is not a prepared avatar (no {MANIFEST})", permanent=True
        )
    data = json.loads(path.read_text())
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise InferenceError(
            f"avatar {avatar_dir.name} has format version {version!r}; this engine reads "
            f"version {FORMAT_VERSION}. Prepare the avatar again.",
            permanent=True,
        )
    return AvatarManifest.from_dict(data)


def load_avatar(
    avatar_dir: str | Path, *, device: str | torch.device, dtype: torch.dtype
) -> PreparedAvatar:
    """Load a prepared avatar; latents come back (N, 8, 32, 32) on ``device`` in ``dtype``."""
    avatar_dir = Path(avatar_dir)
    manifest = _read_manifest(avatar_dir)
    count = manifest.frame_count
    latents = load_file(avatar_dir / LATENTS)["latents"].to(device=device, dtype=dtype)
    if tuple(latents.shape) != (count, 8, 32, 32):
        raise InferenceError(
            f"avatar {avatar_dir.name}: latents have shape {tuple(latents.shape)}, "
            f"expected {(count, 8, 32, 32)}",
            permanent=True,
        )
    boxes = json.loads((avatar_dir / BOXES).read_text())
    return PreparedAvatar(
        manifest=manifest,
        frames=_read_images(avatar_dir / "frames", count, cv2.IMREAD_COLOR),
        latents=latents,
        face_boxes=[_as_box(box) for box in boxes["face_boxes"]],
        masks=_read_images(avatar_dir / "masks", count, cv2.IMREAD_GRAYSCALE),
        mask_boxes=[_as_box(box) for box in boxes["mask_boxes"]],
        fps=manifest.fps,
    )
