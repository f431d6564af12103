"""Avatar preparation: a source video becomes the assets the real-time loop replays (spec §7).

On disk (``out_dir``), written atomically (built in a hidden sibling folder, then renamed in):

    manifest.json          AvatarManifest (format_version, model, face backend, fps, sizes, ...)
    frames/%08d.png        the N upright source frames, lossless BGR PNG
    masks/%08d.png         N blurred blend masks (uint8, each the size of its mask box)
    latents.safetensors    "latents": (N, 8, 32, 32) float32 (avatars from before: float16)
    boxes.json             face_boxes and mask_boxes (N lists of [x1, y1, x2, y2]), detected flags
    landmarks.npy          (N, 68, 2) float32, in frame pixels
    idle.mp4               the ping-pong idle loop at config.fps (when config.idle_video)

Only the N source frames are stored; the cycle of length 2N (forward then reversed, spec §7.1
step 5, pitfall 15) is an index mapping, see :func:`cycle_index`.

Frames without a detected face (pitfall 16): a frame borrows the box and landmarks of the
previous frame with a face (frames before the first face borrow the first face). Boxes are not
smoothed (each frame is pasted back with its own box, so jitter does not move the face), but a
detection far from its neighbours' median box is treated as a false positive and dropped first
(:func:`reject_outliers`); the offline Haar backend has about one such frame in 70. If no frame
has a face, or fewer than half of them do, preparation fails with NoFaceError. Videos that
give fewer than 2 frames at ``config.fps`` (e.g. a one-frame video) are rejected with
MediaError: a still image makes a frozen avatar, which this product does not offer.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from diffusers.models import AutoencoderKL
from safetensors.torch import save_file

from inference.avatar_store import (
    BOXES,
    FORMAT_VERSION,
    IDLE_VIDEO,
    LANDMARKS,
    LATENTS,
    LATENTS_DTYPE,
    MANIFEST,
    AvatarManifest,
    PreparedAvatar,
    cycle_index,
    install_folder,
    load_avatar,
    write_idle_video,
    write_images,
)
from inference.blending import (
    Box,
    blend_mask,
    crop_box,
    crop_face,
    crop_with_padding,
    expanded_crop_box,
)
from inference.config import PrepareConfig
from inference.errors import MediaError, NoFaceError
from inference.faces import FaceBackend, FaceDetection
from inference.layout import staging_folder
from inference.media import probe_video, read_video
from inference.vae import encode_crops

logger = logging.getLogger(__name__)

MIN_FRAMES = 2
MIN_FACE_FRACTION = 0.5  # at least this share of frames must show a detected face
OUTLIER_WINDOW = 4  # frames on either side that vote on whether a detection is plausible

Progress = Callable[[int, str], None]


class _ProgressReporter:
    """Forwards only strictly increasing percentages (0..100) to the caller's callback."""

    def __init__(self, callback: Progress | None) -> None:
        self.callback = callback
        self.last = -1

    def __call__(self, percent: float, stage: str) -> None:
        value = max(0, min(100, int(percent)))
        if self.callback is not None and value > self.last:
            self.last = value
            self.callback(value, stage)


@dataclass
class _Prepared:
    """Everything computed before writing to disk."""

    frames: list[np.ndarray]
    detections: list[FaceDetection]
    detected: list[bool]
    face_boxes: list[Box]
    latents: torch.Tensor
    masks: list[np.ndarray]
    mask_boxes: list[Box]
    source: dict[str, Any]


def resample_indices(count: int, src_fps: float, dst_fps: float) -> list[int]:
    """Source frame indices that play ``count`` frames at ``dst_fps`` (drop/duplicate)."""
    if abs(src_fps - dst_fps) < 0.01:
        return list(range(count))
    out_count = max(1, math.floor(count * dst_fps / src_fps + 1e-6))
    return [min(count - 1, math.floor(k * src_fps / dst_fps + 1e-6)) for k in range(out_count)]


def _read_frames(video_path: Path, config: PrepareConfig) -> tuple[list[np.ndarray], dict]:
    """Upright BGR frames resampled to ``config.fps`` and limited to ``config.max_frames``."""
    info = probe_video(video_path)
    wanted = 0
    if config.max_frames:
        wanted = math.ceil(config.max_frames * info.fps / config.fps) + 1
    decoded = read_video(video_path, max_frames=wanted)
    frames = [
        decoded.frames[i] for i in resample_indices(len(decoded.frames), decoded.fps, config.fps)
    ]
    if config.max_frames:
        frames = frames[: config.max_frames]
    if len(frames) < MIN_FRAMES:
        raise MediaError(
            f"{video_path.name}: only {len(frames)} frame(s) at {config.fps} fps; an avatar "
            f"needs at least {MIN_FRAMES} frames (a few seconds of video is best)"
        )
    source = {"name": video_path.name, "fps": decoded.fps, "rotation": decoded.rotation}
    source.update({"width": info.width, "height": info.height, "frames": info.frame_count})
    return frames, source


def _detect_all(
    frames: list[np.ndarray], backend: FaceBackend, report: _ProgressReporter
) -> list[FaceDetection | None]:
    found: list[FaceDetection | None] = []
    for index, frame in enumerate(frames):
        found.append(backend.detect(frame))
        report(5 + 35 * (index + 1) / len(frames), "detecting faces")
    return found


def _box_stats(detection: FaceDetection) -> tuple[float, float, float]:
    """(centre x, centre y, width) of a detection's box."""
    x1, y1, x2, y2 = detection.box
    return ((x1 + x2) / 2, (y1 + y2) / 2, float(x2 - x1))


def reject_outliers(
    found: list[FaceDetection | None], *, window: int = OUTLIER_WINDOW
) -> list[FaceDetection | None]:
    """Drop detections that disagree with their neighbours (detector false positives).

    A detection is compared with the median centre and width of the detections within
    ``window`` frames on either side (itself included); when at least 3 are there and its
    centre is more than half a median width away, or its width is off by more than 1.5x,
    it becomes None and is later filled like any frame without a face.
    """
    stats = [None if d is None else _box_stats(d) for d in found]
    kept: list[FaceDetection | None] = []
    for index, detection in enumerate(found):
        near = [s for s in stats[max(0, index - window) : index + window + 1] if s is not None]
        if detection is None or len(near) < 3:
            kept.append(detection)
            continue
        cx, cy, width = np.median(np.array(near), axis=0)
        x, y, w = _box_stats(detection)
        off = math.hypot(x - cx, y - cy) > 0.5 * width or not (width / 1.5 <= w <= width * 1.5)
        kept.append(None if off else detection)
    return kept


def _fill_missing(found: list[FaceDetection | None], name: str) -> list[FaceDetection]:
    """Carry the previous face over frames without one (leading ones borrow the first face)."""
    hits = [d for d in found if d is not None]
    if not hits:
        raise NoFaceError(f"{name}: no face was found in any of its {len(found)} frames")
    if len(hits) < MIN_FACE_FRACTION * len(found):
        raise NoFaceError(
            f"{name}: a face was found in only {len(hits)} of {len(found)} frames; use a clip "
            "where the face is visible, frontal and well lit in most frames"
        )
    filled: list[FaceDetection] = []
    previous = hits[0]
    for detection in found:
        previous = detection if detection is not None else previous
        filled.append(previous)
    return filled


def _crop_boxes(
    frames: list[np.ndarray], detections: list[FaceDetection], config: PrepareConfig
) -> list[Box]:
    boxes = []
    for frame, detection in zip(frames, detections, strict=True):
        height, width = frame.shape[:2]
        box = crop_box(
            detection.landmarks,
            bbox_shift=config.bbox_shift,
            extra_margin=config.extra_margin,
            frame_h=height,
            frame_w=width,
            fallback_box=detection.box,
        )
        boxes.append(box)
    return boxes


def _encode(
    vae: AutoencoderKL,
    frames: list[np.ndarray],
    boxes: list[Box],
    batch_size: int,
    report: _ProgressReporter,
) -> torch.Tensor:
    """VAE latents (N, 8, 32, 32) of the 256x256 crops, encoded batch by batch."""
    parts = []
    for start in range(0, len(frames), batch_size):
        stop = min(start + batch_size, len(frames))
        crops = np.stack([crop_face(frames[i], boxes[i]) for i in range(start, stop)])
        parts.append(encode_crops(vae, crops, batch_size=batch_size).cpu())
        report(40 + 35 * stop / len(frames), "encoding latents")
    return torch.cat(parts, dim=0)


def _frame_mask(
    frame: np.ndarray,
    box: Box,
    landmarks: np.ndarray,
    backend: FaceBackend,
    config: PrepareConfig,
) -> tuple[np.ndarray, Box]:
    """Parse the expanded crop around ``box`` and turn it into the blend mask (spec §7.3)."""
    large_box = expanded_crop_box(box, config.expand)
    large = crop_with_padding(frame, large_box)
    local = landmarks - np.array(large_box[:2], dtype=np.float32)
    class_map = backend.parse(cv2.cvtColor(large, cv2.COLOR_BGR2RGB), landmarks=local)
    return blend_mask(
        frame,
        box,
        class_map,
        upper_boundary_ratio=config.upper_boundary_ratio,
        blur_factor=config.blur_factor,
        expand=config.expand,
        mode=config.parsing_mode,
        left_cheek_width=config.left_cheek_width,
        right_cheek_width=config.right_cheek_width,
    )


def _build_masks(
    frames: list[np.ndarray],
    boxes: list[Box],
    detections: list[FaceDetection],
    backend: FaceBackend,
    config: PrepareConfig,
    report: _ProgressReporter,
) -> tuple[list[np.ndarray], list[Box]]:
    """Blend masks and their crop boxes for the N stored frames (not the 2N cycle)."""
    masks, mask_boxes = [], []
    for index, (frame, box, detection) in enumerate(zip(frames, boxes, detections, strict=True)):
        mask, mask_box = _frame_mask(frame, box, detection.landmarks, backend, config)
        masks.append(mask)
        mask_boxes.append(mask_box)
        report(75 + 15 * (index + 1) / len(frames), "building blend masks")
    return masks, mask_boxes


def _compute(
    video_path: Path,
    vae: AutoencoderKL,
    backend: FaceBackend,
    config: PrepareConfig,
    report: _ProgressReporter,
) -> _Prepared:
    frames, source = _read_frames(video_path, config)
    report(5, "detecting faces")
    found = reject_outliers(_detect_all(frames, backend, report))
    detections = _fill_missing(found, video_path.name)
    boxes = _crop_boxes(frames, detections, config)
    latents = _encode(vae, frames, boxes, config.batch_size, report)
    masks, mask_boxes = _build_masks(frames, boxes, detections, backend, config, report)
    detected = [d is not None for d in found]
    return _Prepared(frames, detections, detected, boxes, latents, masks, mask_boxes, source)


def _manifest(
    prepared: _Prepared,
    vae: AutoencoderKL,
    backend: FaceBackend,
    config: PrepareConfig,
    model_info: Mapping[str, Any] | None,
) -> AvatarManifest:
    height, width = prepared.frames[0].shape[:2]
    crop = {
        key: getattr(config, key)
        for key in (
            "bbox_shift",
            "extra_margin",
            "parsing_mode",
            "left_cheek_width",
            "right_cheek_width",
            "upper_boundary_ratio",
            "expand",
            "blur_factor",
        )
    }
    return AvatarManifest(
        format_version=FORMAT_VERSION,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=dict(model_info or {}),
        face_backend=backend.name,
        fps=config.fps,
        frame_count=len(prepared.frames),
        frame_width=width,
        frame_height=height,
        crop=crop,
        vae_dtype=str(vae.dtype).removeprefix("torch."),
        latents_dtype=str(LATENTS_DTYPE).removeprefix("torch."),
        frames_without_face=prepared.detected.count(False),
        idle_video=IDLE_VIDEO if config.idle_video else None,
        source=prepared.source,
    )


def _write_assets(
    folder: Path, prepared: _Prepared, manifest: AvatarManifest, report: _ProgressReporter
) -> None:
    write_images(folder / "frames", prepared.frames)
    write_images(folder / "masks", prepared.masks)
    latents = prepared.latents.to(LATENTS_DTYPE).contiguous()
    save_file({"latents": latents}, folder / LATENTS)
    boxes = {
        "face_boxes": [list(box) for box in prepared.face_boxes],
        "mask_boxes": [list(box) for box in prepared.mask_boxes],
        "detected": prepared.detected,
    }
    (folder / BOXES).write_text(json.dumps(boxes))
    landmarks = np.stack([d.landmarks for d in prepared.detections]).astype(np.float32)
    np.save(folder / LANDMARKS, landmarks)
    if manifest.idle_video:
        report(92, "writing idle video")
        write_idle_video(folder / IDLE_VIDEO, prepared.frames, manifest.fps)
    # The manifest goes last: a folder with a manifest is complete.
    (folder / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2))


def prepare_avatar(
    video_path: str | Path,
    out_dir: str | Path,
    *,
    vae: AutoencoderKL,
    face_backend: FaceBackend,
    config: PrepareConfig,
    progress: Progress | None = None,
    model_info: Mapping[str, Any] | None = None,
) -> AvatarManifest:
    """Prepare an avatar from a video into ``out_dir``; returns its manifest.

    ``progress(percent, stage)`` receives strictly increasing percentages from 0 to 100.
    ``model_info`` (profile name, weights, ...) is stored as the manifest's ``model``.
    Raises MediaError (unreadable or too short video) or NoFaceError; on any failure
    ``out_dir`` is left exactly as it was and no temporary folder remains.
    """
    video_path, out_dir = Path(video_path), Path(out_dir)
    report = _ProgressReporter(progress)
    report(0, "reading video")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_folder(out_dir)
    try:
        prepared = _compute(video_path, vae, face_backend, config, report)
        manifest = _manifest(prepared, vae, face_backend, config, model_info)
        staging.mkdir()
        report(90, "writing avatar")
        _write_assets(staging, prepared, manifest, report)
        install_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report(100, "done")
    logger.info(
        "prepared avatar %s: %d frames at %d fps, face backend %s, %d frame(s) without a face",
        out_dir.name,
        manifest.frame_count,
        manifest.fps,
        manifest.face_backend,
        manifest.frames_without_face,
    )
    return manifest


__all__ = [
    "MANIFEST",
    "AvatarManifest",
    "PreparedAvatar",
    "cycle_index",
    "load_avatar",
    "prepare_avatar",
    "reject_outliers",
    "resample_indices",
]
