"""The viewers' H.264 encoder: aiortc's, opened with our x264 preset, on real frames."""

from __future__ import annotations

import fractions
import re

import aiortc.rtcrtpsender
import av
import numpy as np
import pytest
from aiortc import RTCRtpCodecParameters
from aiortc.codecs.h264 import H264Decoder, h264_depayload
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.jitterbuffer import JitterFrame

from sessions_app.webrtc import encoder as encoder_module
from sessions_app.webrtc.encoder import PresetH264Encoder, install_x264_preset

FPS = 25


def _pictures(count: int, width: int, height: int) -> list[av.VideoFrame]:
    """A moving gradient: something for the encoder to predict."""
    ramp = np.add.outer(np.arange(height), np.arange(width)).astype(np.int64)
    frames = []
    for n in range(count):
        planes = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
        planes[:height] = ((ramp + 4 * n) % 220 + 16).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts, frame.time_base = n, fractions.Fraction(1, FPS)
        frames.append(frame)
    return frames


# x264 writes its settings into the stream (an SEI message at the start); the preset sets
# the subpixel motion estimation level among them.
SUBME = {"ultrafast": 0, "superfast": 1, "veryfast": 2, "medium": 7}
SENT: list[bytes] = []


def _roundtrip(encoder: PresetH264Encoder, frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
    """Encode as an RTP sender does, depacketize and decode as a receiver does."""
    decoder, decoded = H264Decoder(), []
    SENT.clear()
    for n, frame in enumerate(frames):
        payloads, timestamp = encoder.encode(frame, force_keyframe=n == 0)
        data = b"".join(h264_depayload(p) for p in payloads)
        SENT.append(data)
        decoded += decoder.decode(JitterFrame(data=data, timestamp=timestamp))
    return decoded


def _subme() -> int:
    """The subme x264 says (in its SEI) it encoded the last round's stream with."""
    stream = b"".join(SENT)
    match = re.search(rb"subme=(\d+)", stream)
    assert match, "no x264 settings in the stream"
    return int(match.group(1))


def test_it_opens_x264_with_its_preset_and_what_it_sends_decodes_to_the_picture() -> None:
    encoder = PresetH264Encoder("superfast")
    frames = _pictures(12, 96, 64)
    decoded = _roundtrip(encoder, frames)
    assert _subme() == SUBME["superfast"]
    assert len(decoded) == 12 and (decoded[0].width, decoded[0].height) == (96, 64)
    got = decoded[-1].to_ndarray(format="gray").astype(int)
    want = frames[-1].to_ndarray(format="gray").astype(int)
    assert np.abs(got - want).mean() < 4  # the picture, not just any picture


def test_a_new_size_or_bitrate_reopens_the_encoder_with_the_same_preset() -> None:
    encoder = PresetH264Encoder("ultrafast")
    _roundtrip(encoder, _pictures(2, 96, 64))
    first = encoder.codec
    assert len(_roundtrip(encoder, _pictures(3, 128, 96))) == 3  # a new size
    assert encoder.codec is not first and encoder.codec.width == 128
    assert _subme() == SUBME["ultrafast"]
    resized = encoder.codec
    encoder.target_bitrate = 2 * encoder.codec.bit_rate  # the receiver's estimate rose
    _roundtrip(encoder, _pictures(2, 128, 96))
    assert encoder.codec is not resized and encoder.codec.bit_rate == encoder.target_bitrate
    assert _subme() == SUBME["ultrafast"]
    kept = encoder.codec
    encoder.target_bitrate = int(encoder.codec.bit_rate * 1.05)  # within 10%: kept
    _roundtrip(encoder, _pictures(2, 128, 96))
    assert encoder.codec is kept


def test_once_installed_every_h264_sender_of_the_process_gets_the_preset(monkeypatch) -> None:
    monkeypatch.setattr(aiortc.rtcrtpsender, "get_encoder", aiortc.rtcrtpsender.get_encoder)
    monkeypatch.setattr(encoder_module, "_installed", [])
    install_x264_preset("veryfast")
    h264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)
    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    made = aiortc.rtcrtpsender.get_encoder(h264)
    assert isinstance(made, PresetH264Encoder) and made.preset == "veryfast"
    assert isinstance(aiortc.rtcrtpsender.get_encoder(vp8), Vp8Encoder)  # others: aiortc's
    install_x264_preset("superfast")  # a second call changes the preset, wraps nothing twice
    made = aiortc.rtcrtpsender.get_encoder(h264)
    assert isinstance(made, PresetH264Encoder) and made.preset == "superfast"
    assert encoder_module.installed_x264_preset() == "superfast"


@pytest.mark.parametrize("preset", ["ultrafast", "veryfast", "medium"])
def test_each_preset_encodes_as_itself(preset: str) -> None:
    assert len(_roundtrip(PresetH264Encoder(preset), _pictures(4, 64, 48))) == 4
    assert _subme() == SUBME[preset]


def test_aiortcs_own_encoder_would_have_used_medium() -> None:
    """What the preset replaces (this fails when an aiortc upgrade changes it)."""
    from aiortc.codecs.h264 import H264Encoder

    _roundtrip(H264Encoder(), _pictures(4, 64, 48))  # type: ignore[arg-type]
    assert _subme() == SUBME["medium"]
