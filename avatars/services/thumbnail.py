"""An avatar's thumbnail: a still of its prepared face, made once from the first frame."""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.http import Http404
from PIL import Image

from avatars.models import Avatar
from avatars.services.avatar import avatar_dir

THUMBNAIL = "thumbnail.jpg"
SIZE = 256  # pixels, square
MARGIN = 0.6  # of the face box's larger side, added around it


def avatar_thumbnail(*, avatar: Avatar) -> Path:
    """The JPEG (made on first use; any process may make it, the last rename wins)."""
    folder = avatar_dir(avatar)
    target = folder / THUMBNAIL
    if target.is_file():
        return target
    frames = sorted((folder / "frames").glob("*.png")) if folder.is_dir() else []
    if not frames:
        raise Http404(f"Avatar {avatar.avatar_id!r} has no prepared frames (yet).")
    with Image.open(frames[0]) as frame:
        still = frame.convert("RGB").crop(_square(frame.size, _face_box(folder)))
    still = still.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    staging = target.with_name(f".{THUMBNAIL}.{os.getpid()}.tmp")
    still.save(staging, "JPEG", quality=85)
    os.replace(staging, target)
    return target


def avatar_has_still(*, avatar: Avatar) -> bool:
    """Whether :func:`avatar_thumbnail` has a frame to make the still from."""
    folder = avatar_dir(avatar)
    return (folder / THUMBNAIL).is_file() or any((folder / "frames").glob("*.png"))


def _face_box(folder: Path) -> list[int] | None:
    try:
        boxes = json.loads((folder / "boxes.json").read_text())["face_boxes"]
        return [int(v) for v in boxes[0]]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None  # the centre of the frame instead


def _square(size: tuple[int, int], box: list[int] | None) -> tuple[int, int, int, int]:
    """A square around the face (or the frame's centre), inside the frame."""
    width, height = size
    if box is None:
        side = min(width, height)
        cx, cy = width / 2, height / 2
    else:
        x1, y1, x2, y2 = box
        side = min(int(max(x2 - x1, y2 - y1) * (1 + MARGIN)), width, height)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = int(min(max(cx - side / 2, 0), width - side))
    top = int(min(max(cy - side / 2, 0), height - side))
    return left, top, left + side, top + side
