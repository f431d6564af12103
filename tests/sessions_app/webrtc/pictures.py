"""Small flat pictures for the WebRTC tests: a frame's brightness identifies it, even after a
lossy codec."""

from __future__ import annotations

import av
import numpy as np

W, H = 64, 48


def flat(level: int) -> av.VideoFrame:
    """A W x H yuv420p frame of luma ``level`` (neutral chroma)."""
    planes = np.full((H * 3 // 2, W), 128, dtype=np.uint8)
    planes[:H] = level
    return av.VideoFrame.from_ndarray(planes, format="yuv420p")


def level(frame: av.VideoFrame) -> int:
    """The mean luma of a frame made by ``flat`` (rounded)."""
    return int(frame.to_ndarray(format="yuv420p")[:H].mean().round())
