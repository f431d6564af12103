"""Crop boxes, the jaw-mode blend mask and paste-back, in numpy/OpenCV (spec §6.2-§6.4, §7.3,
§7.4, §8.4, pitfalls 10-14).

Boxes are ``(x1, y1, x2, y2)`` int pixel tuples, right/bottom exclusive. Images are
``(H, W, 3)`` uint8 in OpenCV BGR order unless a name says otherwise.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from inference.faces import LOWER_LIP, MOUTH, NECK, NOSE, PARSE_SIZE, SKIN, UPPER_LIP

Box = tuple[int, int, int, int]

CROP_SIZE = 256
MASK_CLASSES = {
    "raw": (SKIN, MOUTH, UPPER_LIP, LOWER_LIP),
    "neck": (SKIN, MOUTH, UPPER_LIP, LOWER_LIP, NECK),
}


def crop_box(
    landmarks: np.ndarray,
    *,
    bbox_shift: int = 0,
    extra_margin: int = 10,
    frame_h: int,
    fallback_box: Box,
    frame_w: int | None = None,
) -> Box:
    """The face crop box from 68 landmarks (spec §6.2, §6.3).

    The box spans the landmarks horizontally and is vertically symmetric about the nose point
    ``lm[29]`` moved down by ``bbox_shift``: ``y1 = max(0, y_half - (max(lm.y) - y_half))``,
    ``y2 = max(lm.y)``. Like upstream, landmarks are truncated to int and the shift is written
    into the landmark array (on a copy here) so the shifted nose point joins ``max(lm.y)``
    [quirk]; a shift past the chin therefore gives an empty box, and the detector's
    ``fallback_box`` is used whenever the box is empty or ``x1 < 0``. Then
    ``y2 = min(y2 + extra_margin, frame_h)``. Unlike upstream, ``x2`` is clipped to ``frame_w``
    when given, so the crop and the paste-back box are the same size.
    """
    lm = np.asarray(landmarks).astype(np.int32)  # a copy: the in-place shift stays local
    nose = lm[29]
    nose[1] += bbox_shift  # [quirk] in place: the shifted point is part of max(lm.y) below
    y_half = int(nose[1])
    y2 = int(lm[:, 1].max())
    y1 = max(0, y_half - (y2 - y_half))
    x1, x2 = int(lm[:, 0].min()), int(lm[:, 0].max())
    if y2 - y1 <= 0 or x2 - x1 <= 0 or x1 < 0:
        x1, y1, x2, y2 = (int(v) for v in fallback_box)
    y2 = min(y2 + extra_margin, frame_h)
    if frame_w is not None:
        x2 = min(x2, frame_w)
    return (x1, y1, x2, y2)


def crop_face(frame: np.ndarray, box: Box) -> np.ndarray:
    """``frame[y1:y2, x1:x2]`` stretched (not letterboxed) to (256, 256, 3) with LANCZOS4."""
    x1, y1, x2, y2 = box
    region = frame[max(0, y1) : y2, max(0, x1) : x2]
    if region.size == 0:
        raise ValueError(
            f"crop box {box} is empty inside a {frame.shape[1]}x{frame.shape[0]} frame"
        )
    return cv2.resize(region, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LANCZOS4)


def expanded_crop_box(box: Box, expand: float = 1.5) -> Box:
    """The square around a face box used for blending (spec §7.3 step 1).

    ``xc = (x1+x2)//2``, ``yc = (y1+y2)//2``, ``s = int((max(w, h)//2) * expand)``;
    returns ``(xc-s, yc-s, xc+s, yc+s)``, which may extend outside the frame.
    """
    x1, y1, x2, y2 = box
    xc, yc = (x1 + x2) // 2, (y1 + y2) // 2
    half = int((max(x2 - x1, y2 - y1) // 2) * expand)
    return (xc - half, yc - half, xc + half, yc + half)


def _overlap(box: Box, width: int, height: int) -> Box:
    """The part of ``box`` inside a ``width`` x ``height`` image (may be empty)."""
    x1, y1, x2, y2 = box
    return (max(x1, 0), max(y1, 0), min(x2, width), min(y2, height))


def crop_with_padding(frame: np.ndarray, box: Box) -> np.ndarray:
    """``frame`` cropped to ``box`` with PIL semantics: pixels outside the frame are black."""
    x1, y1, x2, y2 = box
    out = np.zeros((y2 - y1, x2 - x1) + frame.shape[2:], dtype=frame.dtype)
    ox1, oy1, ox2, oy2 = _overlap(box, frame.shape[1], frame.shape[0])
    if ox2 > ox1 and oy2 > oy1:
        out[oy1 - y1 : oy2 - y1, ox1 - x1 : ox2 - x1] = frame[oy1:oy2, ox1:ox2]
    return out


def jaw_dilate_kernel() -> np.ndarray:
    """The custom 33x33 dilation kernel of jaw mode (spec §7.4 step 2), uint8 0/1.

    Anchor at the centre (16, 16); rows 10-20 hold centred runs of width 1, 3, ..., 21 and rows
    21-32 runs of width 21. With OpenCV's dilate this grows skin up to 16 px upwards (rows below
    the anchor read from below) and up to 6 px downwards in a narrowing cone.
    """
    kernel = np.zeros((33, 33), dtype=np.uint8)
    for row in range(10, 33):
        half = min(row - 10, 10)
        kernel[row, 16 - half : 16 + half + 1] = 1
    return kernel


def _cheek_mask(left_cheek_width: int, right_cheek_width: int) -> np.ndarray:
    """255 on columns 0..256-left and 256+right..511 (inclusive), 0 in the central band."""
    cheek = np.zeros((PARSE_SIZE, PARSE_SIZE), dtype=np.uint8)
    cheek[:, : max(0, PARSE_SIZE // 2 - left_cheek_width + 1)] = 255
    cheek[:, PARSE_SIZE // 2 + right_cheek_width :] = 255
    return cheek


def jaw_mask(
    class_map_512: np.ndarray,
    *,
    mode: str = "jaw",
    left_cheek_width: int = 90,
    right_cheek_width: int = 90,
) -> np.ndarray:
    """Foreground (512, 512) uint8 0/255 from a class map, per parsing mode (spec §7.4).

    ``raw``: skin + mouth + lips; ``neck``: also the neck; ``jaw``: skin dilated with
    :func:`jaw_dilate_kernel`, eroded (ellipse 35x3, 2 iterations) on the cheek sides, kept
    dilated in the central band, minus the nose, plus mouth and lips.
    """
    if mode in MASK_CLASSES:
        return np.where(np.isin(class_map_512, MASK_CLASSES[mode]), 255, 0).astype(np.uint8)
    if mode != "jaw":
        raise ValueError(f"unknown parsing mode {mode!r}; expected 'jaw', 'raw' or 'neck'")
    skin = np.where(class_map_512 == SKIN, 255, 0).astype(np.uint8)
    dilated = cv2.dilate(skin, jaw_dilate_kernel())
    ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 3))
    eroded = cv2.erode(dilated, ellipse, iterations=2)
    cheek = _cheek_mask(left_cheek_width, right_cheek_width) > 0
    region = np.where(cheek, eroded, dilated) > 0
    mouth = np.isin(class_map_512, (MOUTH, UPPER_LIP, LOWER_LIP))
    return np.where((region & (class_map_512 != NOSE)) | mouth, 255, 0).astype(np.uint8)


def blur_kernel_size(width: int, blur_factor: float) -> int:
    """Odd Gaussian kernel size ``int(blur_factor * width // 2 * 2) + 1`` (31 for 300, 0.1)."""
    return int(blur_factor * width // 2 * 2) + 1


def blend_mask(
    frame: np.ndarray,
    face_box: Box,
    class_map: np.ndarray,
    *,
    upper_boundary_ratio: float = 0.5,
    blur_factor: float = 0.1,
    expand: float = 1.5,
    mode: str = "jaw",
    left_cheek_width: int = 90,
    right_cheek_width: int = 90,
) -> tuple[np.ndarray, Box]:
    """The blurred paste-back mask of one frame (spec §7.3) and its expanded crop box.

    ``class_map`` is the (512, 512) parse of ``crop_with_padding(frame, crop_box)``; the
    foreground is resized to the crop (PIL bicubic), kept inside ``face_box`` only, zeroed above
    ``int(H * upper_boundary_ratio)`` and Gaussian-blurred. ``frame`` only supplies the frame
    size for checking the face box. Returns (mask (H, W) uint8, crop_box) with H = W = the
    crop box side.
    """
    x1, y1, x2, y2 = face_box
    if x2 <= x1 or y2 <= y1 or x2 <= 0 or y2 <= 0 or x1 >= frame.shape[1] or y1 >= frame.shape[0]:
        raise ValueError(f"face box {face_box} is empty or outside the frame")
    box = expanded_crop_box(face_box, expand)
    xs, ys, xe, ye = box
    width, height = xe - xs, ye - ys
    foreground = jaw_mask(
        class_map, mode=mode, left_cheek_width=left_cheek_width, right_cheek_width=right_cheek_width
    )
    resized = np.asarray(
        Image.fromarray(foreground).resize((width, height), Image.Resampling.BICUBIC)
    )
    mask = np.zeros((height, width), dtype=np.uint8)
    fx1, fy1, fx2, fy2 = _overlap((x1 - xs, y1 - ys, x2 - xs, y2 - ys), width, height)
    mask[fy1:fy2, fx1:fx2] = resized[fy1:fy2, fx1:fx2]
    mask[: int(height * upper_boundary_ratio)] = 0
    size = blur_kernel_size(width, blur_factor)
    return cv2.GaussianBlur(mask, (size, size), 0), box


def _paste_clipped(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> None:
    """Copy ``image`` into ``canvas`` at (x, y) in place, dropping what falls outside."""
    height, width = image.shape[:2]
    cx1, cy1, cx2, cy2 = _overlap((x, y, x + width, y + height), canvas.shape[1], canvas.shape[0])
    if cx2 > cx1 and cy2 > cy1:
        canvas[cy1:cy2, cx1:cx2] = image[cy1 - y : cy2 - y, cx1 - x : cx2 - x]


def blend_face(
    frame_bgr: np.ndarray,
    face256_bgr: np.ndarray,
    face_box: Box,
    mask: np.ndarray,
    crop_box: Box,
) -> np.ndarray:
    """Paste a generated face back into a copy of the frame (spec §8.4).

    The (256, 256, 3) face is resized bilinearly to the face box, placed into the expanded crop,
    and alpha-blended over the frame with ``mask`` (crop-box sized, uint8) using PIL's integer
    rounding: ``(src*m + dst*(255-m) + 128)`` divided by 255. Pixels where ``mask == 0`` and
    pixels outside the crop box keep their exact values; ``frame_bgr`` is not modified.
    """
    xs, ys, xe, ye = crop_box
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.shape != (ye - ys, xe - xs):
        raise ValueError(f"mask shape {mask.shape} does not match crop box {crop_box}")
    x1, y1, x2, y2 = face_box
    large = crop_with_padding(frame_bgr, crop_box)
    _paste_clipped(large, cv2.resize(face256_bgr, (x2 - x1, y2 - y1)), x1 - xs, y1 - ys)
    out = frame_bgr.copy()
    ox1, oy1, ox2, oy2 = _overlap(crop_box, frame_bgr.shape[1], frame_bgr.shape[0])
    if ox2 <= ox1 or oy2 <= oy1:
        return out
    alpha = mask[oy1 - ys : oy2 - ys, ox1 - xs : ox2 - xs].astype(np.uint32)[..., None]
    src = large[oy1 - ys : oy2 - ys, ox1 - xs : ox2 - xs].astype(np.uint32)
    dst = frame_bgr[oy1:oy2, ox1:ox2].astype(np.uint32)
    mixed = src * alpha + dst * (255 - alpha) + 128
    out[oy1:oy2, ox1:ox2] = ((mixed + (mixed >> 8)) >> 8).astype(np.uint8)
    return out
