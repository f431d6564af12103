"""HLS media with PyAV: the idle loop cut into parts once, and clips remuxed to MPEG-TS."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from inference.media import Mp4Writer
from sessions_app.hls.timeline import Clip, part_sizes

IDLE_PART_SECONDS = 1.0  # idle segments: short, so a new utterance is not kept waiting
MEDIA_BASE_SECONDS = 10.0  # media time 0 is PTS 10 s: the AAC priming stays positive


def idle_parts_encode(idle_mp4: Path, folder: Path, *, relative_to: Path) -> list[Clip]:
    """Cut the idle loop into ~IDLE_PART_SECONDS MP4s, each opening on a key frame, with
    AAC silence so that the audio track never stops. ``folder`` must exist."""
    with av.open(str(idle_mp4)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        total = stream.frames or sum(1 for _ in container.decode(stream))
    sizes = part_sizes(total, round(fps * IDLE_PART_SECONDS))
    with av.open(str(idle_mp4)) as container:
        frames = (f.to_ndarray(format="bgr24") for f in container.decode(video=0))
        return [
            _idle_part(folder / f"idle_{i:03d}.mp4", frames, size, fps, relative_to)
            for i, size in enumerate(sizes)
        ]


def _idle_part(
    path: Path, frames: Iterator[np.ndarray], size: int, fps: float, relative_to: Path
) -> Clip:
    first = next(frames)
    height, width = first.shape[:2]
    silence = np.zeros(round(size / fps * 16000), dtype=np.float32)
    with Mp4Writer(
        path,
        fps=fps,
        width=width,
        height=height,
        audio=silence,
        crf=20,
        tune="zerolatency",
        gop=size,
    ) as writer:
        writer.write(first)
        for _ in range(size - 1):
            writer.write(next(frames))
    return Clip(source=str(path.relative_to(relative_to)), duration=round(size / fps, 6))


def segment_ts(source: Path, *, start: float, duration: float) -> bytes:
    """Remux one H.264 + AAC clip into an MPEG-TS segment at media time ``start``.

    Audio that starts past the video's end (the encoder's last padded frame) is dropped,
    so consecutive segments overlap by a few milliseconds at most.
    """
    buffer = io.BytesIO()
    offset = MEDIA_BASE_SECONDS + start
    with (
        av.open(str(source)) as clip,
        av.open(buffer, "w", format="mpegts", options={"mpegts_copyts": "1"}) as ts,
    ):
        picked = [*clip.streams.video[:1], *clip.streams.audio[:1]]
        streams = {s.index: ts.add_stream_from_template(s) for s in picked}
        for packet in clip.demux(*picked):
            if packet.dts is None or packet.pts is None:
                continue  # the demuxer's flush packet
            base = packet.time_base
            if packet.stream.type == "audio" and packet.pts * base >= duration:
                continue
            shift = round(offset * base.denominator / base.numerator)
            packet.pts += shift
            packet.dts += shift
            packet.stream = streams[packet.stream.index]
            ts.mux(packet)
    return buffer.getvalue()
