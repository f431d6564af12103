"""HLS media with PyAV: the idle loop cut into parts once, and clips remuxed to MPEG-TS."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from inference.media import Mp4Writer
from sessions_app.hls.mpegts import ts_continuity_pad
from sessions_app.hls.timeline import Clip, Variant, part_sizes

IDLE_PART_SECONDS = 1.0  # idle segments: short, so a new utterance is not kept waiting
MEDIA_BASE_SECONDS = 10.0  # media time 0 is PTS 10 s: every timestamp stays positive
# copyts: keep our timestamps. max_delay (µs): the PCR runs this far behind the DTS, so that
# every PES arrives before it is due, as the MPEG-TS decoder model (T-STD) requires.
TS_OPTIONS = {"mpegts_copyts": "1", "max_delay": "100000"}
AAC_FRAME = 1024  # samples that one AAC-LC packet decodes to
# Speech chunks are encoded for speed (crf 18, a fast preset) and the mouth moves, where the
# idle loop is not (crf 20): the bandwidths declared from the idle loop leave room for speech
# (Apple wants a measured peak under 125% of BANDWIDTH and an average under 110% of
# AVERAGE-BANDWIDTH, authoring spec 1.29 and 1.28).
PEAK_HEADROOM = 2.0
AVERAGE_HEADROOM = 1.5


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


def segment_ts(
    source: Path, *, start: float, duration: float, audio: tuple[Path, float] | None = None
) -> bytes:
    """Remux one H.264 + AAC clip into an MPEG-TS segment at media time ``start``.

    MPEG-TS has no edit list, so the audio is cut to the whole AAC frames within the video
    ``[0, duration)``: the encoder's priming and the real audio that a chunk carries around
    its edges (hidden by the MP4 edit list) would otherwise overlap the neighbouring
    segments. Timestamps then only move forward from segment to segment (Apple's authoring
    spec 7.2), and audio starts with the video.

    ``audio`` is ``(track, offset)``: take the audio instead from the AAC frames of a
    continuous ``track`` that start within ``[offset, offset + duration)`` seconds. The
    segments of one utterance then carry consecutive frames of one encoding: no gap, no
    overlap and no seam in the decoded sound (a clip cut on its own leaves a gap of up to
    one AAC frame).
    """
    buffer = io.BytesIO()
    with (
        av.open(buffer, "w", format="mpegts", options=TS_OPTIONS) as ts,
        av.open(str(source)) as clip,
        ExitStack() as more,
    ):
        track = more.enter_context(av.open(str(audio[0]))) if audio is not None else None
        video = clip.streams.video[:1]
        own_audio = clip.streams.audio[:1] if track is None else []
        streams = {s.index: ts.add_stream_from_template(s) for s in [*video, *own_audio]}
        track_stream = ts.add_stream_from_template(track.streams.audio[0]) if track else None
        for packet in clip.demux(*video, *own_audio):
            if packet.pts is None or packet.dts is None:
                continue  # the demuxer's flush packet
            if packet.stream.type == "audio" and not _within(packet, duration):
                continue
            _mux_at(ts, packet, streams[packet.stream.index], start)
        if track is not None and audio is not None:
            _mux_track(ts, track, track_stream, start, duration, offset=audio[1])
    return ts_continuity_pad(buffer.getvalue())


def _mux_at(ts: Any, packet: av.Packet, stream: Any, start: float, offset: float = 0.0) -> None:
    """Mux ``packet`` with its time ``offset`` moved to media time ``start``."""
    assert packet.pts is not None and packet.dts is not None  # callers skip flush packets
    base = packet.time_base
    shift = round((MEDIA_BASE_SECONDS + start - offset) * base.denominator / base.numerator)
    packet.pts += shift
    packet.dts += shift
    packet.stream = stream
    ts.mux(packet)


def _mux_track(
    ts: Any, track: Any, stream: Any, start: float, duration: float, *, offset: float
) -> None:
    """The AAC frames of ``track`` that start within ``[offset, offset + duration)``."""
    first, last = Fraction(offset), Fraction(offset) + Fraction(duration)
    for packet in track.demux(track.streams.audio[0]):
        if packet.pts is None or packet.dts is None:
            continue  # the demuxer's flush packet
        begin = packet.pts * packet.time_base
        if first <= begin < last:
            _mux_at(ts, packet, stream, start, offset)


def _within(packet: av.Packet, duration: float) -> bool:
    """Whether an AAC packet decodes inside ``[0, duration)`` seconds. It always decodes
    AAC_FRAME samples: a shorter MP4 duration is an edit, which MPEG-TS cannot carry."""
    assert packet.pts is not None  # the caller skips the demuxer's flush packet
    begin = packet.pts * packet.time_base
    end = begin + Fraction(AAC_FRAME, packet.stream.codec_context.sample_rate)
    return begin >= 0 and end <= Fraction(duration)


def variant_measure(clips: list[tuple[Path, float]]) -> Variant:
    """The variant of a stream like ``clips`` (path, seconds): codecs and size from the
    first one's headers, bit rates from their MPEG-TS segments, with headroom for speech."""
    bits = [len(segment_ts(path, start=0.0, duration=span)) * 8 for path, span in clips]
    spans = [span for _, span in clips]
    peak = max(size / span for size, span in zip(bits, spans))
    average = sum(bits) / sum(spans)
    with av.open(str(clips[0][0])) as container:
        video = container.streams.video[0].codec_context
        audio = container.streams.audio[0].codec_context
        rate = container.streams.video[0].average_rate
        # An MP4 always carries the avcC and the AAC AudioSpecificConfig as extradata.
        assert video.extradata is not None and audio.extradata is not None
        return Variant(
            bandwidth=math.ceil(peak * PEAK_HEADROOM),
            average_bandwidth=math.ceil(average * AVERAGE_HEADROOM),
            codecs=f"{_avc1(video.extradata)},{_mp4a(audio.extradata)}",
            width=video.width,
            height=video.height,
            frame_rate=float(rate or 25),
        )


def _avc1(avcc: bytes) -> str:
    """RFC 6381 name of H.264 from its avcC: profile, constraint flags, level."""
    return f"avc1.{avcc[1]:02x}{avcc[2]:02x}{avcc[3]:02x}"


def _mp4a(audio_specific_config: bytes) -> str:
    """RFC 6381 name of AAC from its AudioSpecificConfig: the audio object type (2: LC)."""
    return f"mp4a.40.{audio_specific_config[0] >> 3}"
