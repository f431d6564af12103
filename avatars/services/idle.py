"""An avatar's separate idle clip (the seed's ``idle_video_file``), written as its idle loop.

Without one, preparation writes the idle loop from the avatar's own frames played back and
forth. With one, the clip replaces that loop once the avatar folder is in place, scaled to the
avatar's frame size and resampled to its frame rate, so that the HLS idle parts and the
players' first picture match the talking video frame for frame in size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from inference.media import Mp4Writer, read_video

logger = logging.getLogger(__name__)

IDLE_VIDEO = "idle.mp4"


def idle_clip_write(*, source: Path, folder: Path, width: int, height: int, fps: int) -> Path:
    """Write ``source`` as ``folder/idle.mp4`` at ``width`` x ``height`` and ``fps`` (the file
    is replaced atomically: a reader sees the old loop or the new one)."""
    clip = read_video(source)
    step = clip.fps / fps  # source frames per output frame
    count = max(1, int(len(clip.frames) / step))
    target = folder / IDLE_VIDEO
    with Mp4Writer(target, fps=fps, width=width, height=height, crf=20) as writer:
        for index in range(count):
            frame = clip.frames[min(len(clip.frames) - 1, int(index * step))]
            if frame.shape[:2] != (height, width):
                frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
            writer.write(frame)
    logger.info("idle clip %s written as %s (%d frames)", source.name, target, count)
    return target
