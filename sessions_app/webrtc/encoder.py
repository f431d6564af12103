"""The peers' H.264 encoder: aiortc's, with an x264 speed preset of our choosing.

aiortc opens libx264 with its default preset, ``medium``: at 576x768 and 25 fps that is
13-15 CPU ms a frame, a third of a core per viewer, in the process that holds the peer
connections. ``veryfast`` gives the same picture at the same bitrate (luma PSNR 39.5 dB
against medium's 39.4 on ``sun.mp4`` at aiortc's 1 Mbit/s) for about a third of the CPU;
``superfast`` a quarter (-0.2 dB), ``ultrafast`` a sixth (-1.9 dB). Measured with
``bench/webrtc.py --mode encoder`` (``bench/results/webrtc-encoder-cpu.md``).

:func:`install_x264_preset` makes every H.264 sender of the process use
:class:`PresetH264Encoder`; everything else about the encoder (baseline profile, level 3.1,
zero-latency tuning, the bitrate the receiver's estimate sets, key frames on request, RTP
packetization) stays aiortc's. Only the codec context is opened here, with the preset.
"""

from __future__ import annotations

import fractions
import logging
from collections.abc import Iterator
from typing import Any

import aiortc.rtcrtpsender
import av
from aiortc.codecs import get_encoder
from aiortc.codecs.h264 import MAX_FRAME_RATE, H264Encoder

logger = logging.getLogger(__name__)

DEFAULT_X264_PRESET = "veryfast"


class PresetH264Encoder(H264Encoder):
    """aiortc's H.264 encoder whose libx264 context opens with ``preset``."""

    def __init__(self, preset: str = DEFAULT_X264_PRESET) -> None:
        super().__init__()
        self.preset = preset

    def _encode_frame(self, frame: av.VideoFrame, force_keyframe: bool) -> Iterator[bytes]:
        if self.codec is None or self._outdated(frame):
            # Where aiortc would open (or reopen) its own context: open ours instead, which
            # it then keeps, as its size and bitrate match.
            self.buffer_data = b""
            self.buffer_pts = None
            self.codec = self._open(frame)
        yield from super()._encode_frame(frame, force_keyframe)

    def _outdated(self, frame: av.VideoFrame) -> bool:
        """aiortc's rule: a new size, or a target bitrate more than 10% off the context's."""
        codec = self.codec
        assert codec is not None
        rate = codec.bit_rate or 1
        return (
            frame.width != codec.width
            or frame.height != codec.height
            or abs(self.target_bitrate - rate) / rate > 0.1
        )

    def _open(self, frame: av.VideoFrame) -> Any:
        codec: Any = av.CodecContext.create("libx264", "w")
        codec.width = frame.width
        codec.height = frame.height
        codec.bit_rate = self.target_bitrate
        codec.pix_fmt = "yuv420p"
        codec.framerate = fractions.Fraction(MAX_FRAME_RATE, 1)
        codec.time_base = fractions.Fraction(1, MAX_FRAME_RATE)
        codec.options = {"level": "31", "tune": "zerolatency", "preset": self.preset}
        codec.profile = "Baseline"
        return codec


_installed: list[str] = []


def install_x264_preset(preset: str) -> None:
    """Make the process's RTP senders encode H.264 with ``preset`` (other codecs: aiortc's).

    aiortc's senders create their encoder through ``aiortc.rtcrtpsender.get_encoder``; it is
    replaced once by a function that returns :class:`PresetH264Encoder` for H.264. The
    preset is one of x264's (the settings check it: ``WEBRTC_X264_PRESET``)."""
    if _installed:
        _installed[0] = preset
        return
    _installed.append(preset)

    def encoder_for(codec: Any) -> Any:
        if codec.mimeType.lower() == "video/h264":
            return PresetH264Encoder(_installed[0])
        return get_encoder(codec)

    aiortc.rtcrtpsender.get_encoder = encoder_for
    logger.info("WebRTC H.264 senders encode with the x264 preset %r", preset)


def installed_x264_preset() -> str | None:
    return _installed[0] if _installed else None
