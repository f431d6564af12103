"""Paste-back and BGR -> yuv420p as batched torch ops on the engine's device (spec §8.4).

:class:`DeviceBlender` does what :func:`inference.blending.blend_face` does, for a batch of
frames of one prepared avatar, without leaving the device; :func:`bgr_to_yuv420p` turns the
blended frames into the planar I420 layout that ``Mp4Writer.write_yuv420p`` encodes, so
libswscale is skipped. On a CPU-only machine the same code runs on the CPU.

Both emulate the integer arithmetic of the CPU path rather than rounding a float result:

* The bilinear resize is OpenCV's fixed-point ``INTER_LINEAR`` (half-pixel centres, no
  antialias, edge clamping): 11-bit weights, the horizontal pass first, and the vertical pass
  as OpenCV's SIMD kernel rounds it, ``((h0>>4)*b0 >> 16) + ((h1>>4)*b1 >> 16) + 2 >> 2``.
  It matches ``cv2.resize`` exactly on about 99.9% of pixels and within 1 level on the rest
  (OpenCV's scalar tail rounds differently); rounding a float ``F.interpolate`` instead
  matches only ~87%. The arithmetic is integer-exact (int32, or float32 on integers below
  2**24 divided by powers of two), so every device gives the same bytes.
* The alpha blend is ``blend_face``'s: ``(src*m + dst*(255-m) + 128)``, ``(x + (x>>8)) >> 8``.
  A resized pixel one level off moves the blend by at most one level, and pixels where the
  mask is 0 or that lie outside the face box come back exact, so only the region that
  holds every face box is computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from inference.avatar_store import PreparedAvatar
from inference.blending import CROP_SIZE, Box

RESIZE_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
RESIZE_COEF_SCALE = 1 << RESIZE_COEF_BITS
# BT.601 limited range, as libswscale builds its RGB -> YUV table (RGB2YUV_SHIFT = 15).
YUV_SHIFT = 15
Y_COEFS = (0.299, 0.587, 0.114)  # R, G, B
U_COEFS = (-0.168736, -0.331264, 0.5)
V_COEFS = (0.5, -0.418688, -0.081312)


@dataclass(frozen=True)
class _Axis:
    """Per stored frame, along one axis of the blend region: bilinear taps into the 256 face."""

    first: torch.Tensor  # (N, L) int64 index of the first tap
    second: torch.Tensor  # (N, L) int64 index of the second tap
    weight_first: torch.Tensor  # (N, L) int32, weights sum to 2048 inside the face box
    weight_second: torch.Tensor  # (N, L) int32
    inside: torch.Tensor  # (N, L) bool: this row/column lies inside the face box


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps for ``src`` -> ``dst`` samples: (i0, i1, w0, w1), w in 1/2048.

    Coordinates are computed as OpenCV does (``fx = float((d + 0.5) * scale - 0.5)``, clamped
    at both edges) and each weight is rounded to 11 bits on its own.
    """
    scale = 1.0 / (np.float64(dst) / src)
    position = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    index = np.floor(position).astype(np.int64)
    fraction = (position - index).astype(np.float32)
    low, high = index < 0, index >= src - 1
    fraction[low | high] = 0.0
    index[low] = 0
    index[high] = src - 1
    w1 = np.rint(fraction * np.float32(RESIZE_COEF_SCALE)).astype(np.int32)
    w0 = np.rint((np.float32(1.0) - fraction) * np.float32(RESIZE_COEF_SCALE)).astype(np.int32)
    return index, np.minimum(index + 1, src - 1), w0, w1


def _axis_taps(start: int, length: int, box_lo: int, box_hi: int) -> list[np.ndarray]:
    """Taps for region positions ``start .. start+length-1`` of a face spanning ``[lo, hi)``."""
    first = np.zeros(length, dtype=np.int64)
    second = np.zeros(length, dtype=np.int64)
    w0 = np.zeros(length, dtype=np.int32)
    w1 = np.zeros(length, dtype=np.int32)
    inside = np.zeros(length, dtype=bool)
    i0, i1, c0, c1 = _linear_taps(CROP_SIZE, box_hi - box_lo)
    lo, hi = max(box_lo, start), min(box_hi, start + length)
    if hi > lo:
        region, face = slice(lo - start, hi - start), slice(lo - box_lo, hi - box_lo)
        first[region], second[region], w0[region], w1[region] = (
            i0[face],
            i1[face],
            c0[face],
            c1[face],
        )
        inside[region] = True
    return [first, second, w0, w1, inside]


def _stack_axis(rows: list[list[np.ndarray]], device: torch.device) -> _Axis:
    parts = [torch.from_numpy(np.stack([row[k] for row in rows])).to(device) for k in range(5)]
    return _Axis(*parts)


def _overlap(box: Box, width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    return (max(x1, 0), max(y1, 0), min(x2, width), min(y2, height))


def _union_region(avatar: PreparedAvatar, width: int, height: int) -> Box:
    """The smallest frame box holding every frame's face box (clipped to the frame).

    Only there can a blend change a pixel: elsewhere ``blend_face`` mixes the frame with
    itself, ``(dst*m + dst*(255-m) + 128)`` divided by 255, which gives ``dst`` back exactly.
    """
    boxes = [_overlap(box, width, height) for box in avatar.face_boxes]
    boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
    if not boxes:
        return (0, 0, 0, 0)
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _region_mask(mask: np.ndarray, crop: Box, region: Box) -> np.ndarray:
    """The crop-box mask placed in ``region`` coordinates; 0 outside the crop box."""
    rx1, ry1, rx2, ry2 = region
    out = np.zeros((ry2 - ry1, rx2 - rx1), dtype=np.uint8)
    if mask.ndim == 3:
        mask = mask[..., 0]
    xs, ys, xe, ye = crop
    if mask.shape != (ye - ys, xe - xs):
        raise ValueError(f"mask shape {mask.shape} does not match crop box {crop}")
    ox1, oy1, ox2, oy2 = max(xs, rx1), max(ys, ry1), min(xe, rx2), min(ye, ry2)
    if ox2 > ox1 and oy2 > oy1:
        out[oy1 - ry1 : oy2 - ry1, ox1 - rx1 : ox2 - rx1] = mask[
            oy1 - ys : oy2 - ys, ox1 - xs : ox2 - xs
        ]
    return out


class DeviceBlender:
    """``blend_face`` for batches of one avatar's frames, as tensor ops on one device.

    Built once per prepared avatar with :meth:`for_avatar`, which uploads every stored frame
    ``(N, H, W, 3)`` uint8 (1.3 MB a 576x768 frame: 400 MB for 300 frames), each frame's mask
    cut to the region ``(x1, y1, x2, y2)`` that holds every face box, ``(N, Hr, Wr)`` uint8 (at
    most a third of the frames' size, far less when the face stays put), and per-row/column
    resize tables (a few KB a frame). A batch then costs a handful of kernels whatever the
    box sizes: no per-frame loop and no host round trip.
    """

    def __init__(
        self,
        frames: torch.Tensor,
        masks: torch.Tensor,
        region: Box,
        rows: _Axis,
        cols: _Axis,
    ) -> None:
        self.frames = frames  # (N, H, W, 3) uint8 BGR
        self.masks = masks  # (N, Hr, Wr) uint8
        self.region = region  # (x1, y1, x2, y2) in frame pixels
        self.rows = rows
        self.cols = cols

    @property
    def device(self) -> torch.device:
        return self.frames.device

    @classmethod
    def for_avatar(cls, avatar: PreparedAvatar, device: torch.device | str) -> DeviceBlender:
        """Upload ``avatar``'s frames, masks and boxes to ``device`` (once per avatar)."""
        device = torch.device(device)
        if not avatar.frames:
            raise ValueError("the avatar has no frames")
        height, width = avatar.frames[0].shape[:2]
        region = _union_region(avatar, width, height)
        rx1, ry1, rx2, ry2 = region
        masks, rows, cols = [], [], []
        for face_box, mask, crop in zip(
            avatar.face_boxes, avatar.masks, avatar.mask_boxes, strict=True
        ):
            x1, y1, x2, y2 = face_box
            if x2 <= x1 or y2 <= y1:
                raise ValueError(f"face box {face_box} is empty")
            masks.append(_region_mask(mask, crop, region))
            rows.append(_axis_taps(ry1, ry2 - ry1, y1, y2))
            cols.append(_axis_taps(rx1, rx2 - rx1, x1, x2))
        return cls(
            frames=torch.from_numpy(np.stack(avatar.frames)).to(device),
            masks=torch.from_numpy(np.stack(masks)).to(device),
            region=region,
            rows=_stack_axis(rows, device),
            cols=_stack_axis(cols, device),
        )

    def blend(self, frame_indices: list[int], faces: torch.Tensor) -> torch.Tensor:
        """Paste ``faces`` (B, 256, 256, 3) uint8 BGR into stored frames ``frame_indices``.

        Returns (B, H, W, 3) uint8 BGR on the device; ``blend_face`` per frame within one level,
        exact outside the crop boxes and where the mask is 0.
        """
        # 1. check inputs
        count = self.frames.shape[0]
        if (
            faces.dtype != torch.uint8
            or faces.ndim != 4
            or tuple(faces.shape[1:]) != (CROP_SIZE, CROP_SIZE, 3)
        ):
            raise ValueError(
                f"faces must be (B, 256, 256, 3) uint8, got {tuple(faces.shape)} {faces.dtype}"
            )
        if len(frame_indices) != faces.shape[0]:
            raise ValueError(f"{len(frame_indices)} frame indices for {faces.shape[0]} faces")
        if any(not 0 <= j < count for j in frame_indices):
            raise ValueError(f"frame indices {frame_indices} outside 0..{count - 1}")
        index = torch.tensor(frame_indices, dtype=torch.int64, device=self.device)
        out = self.frames.index_select(0, index)
        rx1, ry1, rx2, ry2 = self.region
        if rx2 <= rx1 or ry2 <= ry1:
            return out
        # 2. the face resized to each face box, in region coordinates
        source = self._resized(index, faces.to(self.device))
        # 3. the face inside its box, the frame elsewhere; blended with the mask. Float32 is
        # exact here: every value is an integer below 2**24 and the divisions are by 256.
        target = out[:, ry1:ry2, rx1:rx2].to(torch.float32)
        rows = self.rows.inside.index_select(0, index)[:, :, None]
        inside = rows & self.cols.inside.index_select(0, index)[:, None, :]
        source = torch.where(inside[..., None], source, target)
        alpha = self.masks.index_select(0, index).to(torch.float32)[..., None]
        mixed = source * alpha + target * (255 - alpha) + 128
        blended = torch.floor((mixed + torch.floor(mixed * (1 / 256))) * (1 / 256))
        out[:, ry1:ry2, rx1:rx2] = blended.to(torch.uint8)
        return out

    def _resized(self, index: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """(B, 256, 256, 3) uint8 -> (B, Hr, Wr, 3) float32 holding integers: OpenCV's
        fixed-point INTER_LINEAR.

        The horizontal pass (at most 255 * 2048) is exact in float32; the vertical pass, whose
        products reach 2**26, runs in int32 and rounds as OpenCV's SIMD kernel does.
        """
        batch = faces.shape[0]
        rows_n, cols_n = self.masks.shape[1:]
        pixels = faces.to(torch.float32)
        cols = self.cols
        taps = [
            torch.gather(
                pixels,
                2,
                c.index_select(0, index)[:, None, :, None].expand(batch, CROP_SIZE, cols_n, 3),
            )
            for c in (cols.first, cols.second)
        ]
        weights = [
            w.index_select(0, index)[:, None, :, None]
            for w in (cols.weight_first, cols.weight_second)
        ]
        horizontal = (taps[0] * weights[0] + taps[1] * weights[1]).to(torch.int32) >> 4
        rows = self.rows
        first = rows.first.index_select(0, index)[:, :, None, None]
        second = rows.second.index_select(0, index)[:, :, None, None]
        shape = (batch, rows_n, cols_n, 3)
        upper = torch.gather(horizontal, 1, first.expand(shape))
        lower = torch.gather(horizontal, 1, second.expand(shape))
        upper = (upper * rows.weight_first.index_select(0, index)[:, :, None, None]) >> 16
        lower = (lower * rows.weight_second.index_select(0, index)[:, :, None, None]) >> 16
        return ((upper + lower + 2) >> 2).to(torch.float32)  # at most 255: weights sum to 2048


def _fixed(coefs: tuple[float, float, float], scale: float) -> tuple[int, int, int]:
    """libswscale's integer (R, G, B) weights for one output plane."""
    r, g, b = (int(round(c * scale / 255 * (1 << YUV_SHIFT))) for c in coefs)
    return (r, g, b)


def _weighted(rgb: list[torch.Tensor], coefs: tuple[int, int, int]) -> torch.Tensor:
    return rgb[0] * coefs[0] + rgb[1] * coefs[1] + rgb[2] * coefs[2]


def bgr_to_yuv420p(frames: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 BGR -> (B, H'*3//2, W') uint8 planar I420, H'/W' rounded up to even.

    Odd sizes are padded by replicating the last row/column, as ``Mp4Writer.write`` does. BT.601
    limited range with libswscale's 15-bit weights; each chroma sample is the 2x2 mean, all
    truncated as swscale's default (non-``accurate_rnd``) path does. Against
    ``VideoFrame.reformat(format="yuv420p")`` of PyAV's libswscale this is exact on ~99.99% of
    luma and ~87% of chroma samples and never more than one level off. Float32 is exact: every
    sum is an integer below 2**24 and the divisions are by powers of two.
    """
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be (B, H, W, 3) uint8, got {tuple(frames.shape)} {frames.dtype}"
        )
    batch, height, width = frames.shape[:3]
    if height % 2:
        frames = torch.cat([frames, frames[:, -1:]], dim=1)
    if width % 2:
        frames = torch.cat([frames, frames[:, :, -1:]], dim=2)
    height, width = height + height % 2, width + width % 2
    # (B, 3, H, W) B, G, R planes, each contiguous: strided channel views are several times
    # slower in every elementwise op below
    pixels = frames.permute(0, 3, 1, 2).contiguous().to(torch.float32)
    rgb = [pixels[:, 2], pixels[:, 1], pixels[:, 0]]
    # the +1 keeps an exact integer result off the floor below it, as swscale's rounding term does
    luma = torch.floor((_weighted(rgb, _fixed(Y_COEFS, 219)) + 1) * 2.0**-YUV_SHIFT) + 16
    sums = F.avg_pool2d(pixels, 2) * 4  # 2x2 sums, exact: multiples of 1/4 below 256
    quads = [sums[:, 2], sums[:, 1], sums[:, 0]]
    scale = 2.0 ** -(YUV_SHIFT + 2)  # a sum of four samples
    u = torch.floor((_weighted(quads, _fixed(U_COEFS, 224)) + 2048) * scale) + 128
    v = torch.floor((_weighted(quads, _fixed(V_COEFS, 224)) + 2048) * scale) + 128
    planes = torch.cat([p.reshape(batch, -1) for p in (luma, u, v)], dim=1)
    return planes.to(torch.uint8).reshape(batch, height * 3 // 2, width)
