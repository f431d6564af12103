from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from inference.errors import MediaError
from inference.media import (
    Mp4Writer,
    probe_audio,
    probe_video,
    read_video,
    write_mp4,
)
from tests.media import (
    decode_audio,
    make_corrupt_file,
    make_face_video,
    make_noface_video,
    make_speech_wav,
    speech_samples,
    tone,
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.4 s (10 frames) of the astronaut at 25 fps, 256x320, no audio."""
    return make_face_video(tmp_path_factory.mktemp("media") / "face.mp4", seconds=0.4)


def _gradient_frames(count: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    return [
        np.clip(np.broadcast_to(xs * 0.5 + ys * 0.5, (height, width, 3)) + 3 * i, 0, 255).astype(
            np.uint8
        )
        for i in range(count)
    ]


def test_it_probes_a_generated_face_video(clip: Path) -> None:
    info = probe_video(clip)

    assert (info.width, info.height) == (256, 320)
    assert info.fps == pytest.approx(25.0)
    assert info.frame_count == 10
    assert info.duration_s == pytest.approx(0.4, abs=0.01)
    assert info.rotation == 0
    assert info.has_audio is False
    assert info.codec == "h264"


def test_it_reports_the_audio_track_of_a_video_with_sound(tmp_path: Path) -> None:
    path = make_face_video(tmp_path / "talk.mp4", seconds=0.8, with_audio=True)

    assert probe_video(path).has_audio is True
    audio = probe_audio(path)
    assert audio.codec == "aac"
    assert audio.sample_rate == 16000
    assert audio.duration_s == pytest.approx(0.8, abs=0.1)


def test_it_probes_a_stereo_wav(tmp_path: Path) -> None:
    path = make_speech_wav(tmp_path / "speech.wav", seconds=1.5, sample_rate=22050, channels=2)

    info = probe_audio(path)

    assert (info.sample_rate, info.channels, info.codec) == (22050, 2, "pcm_s16le")
    assert info.duration_s == pytest.approx(1.5, abs=0.01)


def test_it_makes_speech_like_audio_with_pauses() -> None:
    samples = speech_samples(2.0, 16000)
    frame_energy = (samples[: 16000 * 2].reshape(-1, 320) ** 2).mean(axis=1)

    assert samples.dtype == np.float32 and np.abs(samples).max() <= 1.0
    assert (frame_energy < 1e-4).mean() > 0.1  # silent gaps between syllables
    assert (frame_energy > 1e-2).mean() > 0.1  # loud voiced parts
    np.testing.assert_array_equal(samples, speech_samples(2.0, 16000))


@pytest.mark.parametrize("kind", ["corrupt", "empty", "text", "wav", "missing"])
def test_it_rejects_files_that_are_not_video(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.mp4"
    if kind == "corrupt":
        make_corrupt_file(path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, this is not a video\n" * 20)
    elif kind == "wav":
        path = make_speech_wav(tmp_path / "speech.wav", seconds=0.5)

    with pytest.raises(MediaError) as excinfo:
        probe_video(path)
    assert excinfo.value.permanent is True
    assert path.name in excinfo.value.message
    with pytest.raises(MediaError):
        read_video(path)


def test_it_rejects_an_audio_probe_of_a_silent_video(clip: Path) -> None:
    with pytest.raises(MediaError, match="no audio stream"):
        probe_audio(clip)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_it_returns_upright_frames_when_rotation_metadata_is_set(
    tmp_path: Path, clip: Path, rotation: int
) -> None:
    rotated = make_face_video(tmp_path / "rotated.mp4", seconds=0.4, rotation=rotation)

    info = probe_video(rotated)
    decoded = read_video(rotated, max_frames=3)
    reference = read_video(clip, max_frames=3)

    assert (info.width, info.height, info.rotation) == (256, 320, rotation)
    assert decoded.rotation == rotation
    assert decoded.frames[0].shape == (320, 256, 3)
    difference = np.abs(decoded.frames[0].astype(int) - reference.frames[0].astype(int)).mean()
    assert difference < 4.0  # the same picture, up to H.264 noise


def test_it_stops_reading_at_max_frames(clip: Path) -> None:
    decoded = read_video(clip, max_frames=4)

    assert len(decoded.frames) == 4
    assert decoded.fps == pytest.approx(25.0)
    assert decoded.frames[0].dtype == np.uint8


def test_it_round_trips_frames_through_write_mp4(tmp_path: Path) -> None:
    frames = _gradient_frames(12)

    path = write_mp4(tmp_path / "out.mp4", frames, fps=25)
    decoded = read_video(path)

    assert len(decoded.frames) == 12
    error = np.abs(decoded.frames[5].astype(int) - frames[5].astype(int)).mean()
    assert error < 3.0
    assert probe_video(path).codec == "h264"


@pytest.mark.parametrize("audio_seconds", [0.2, 0.48, 2.0])
def test_it_trims_or_pads_audio_to_the_video_length(tmp_path: Path, audio_seconds: float) -> None:
    frames = _gradient_frames(12)  # 0.48 s at 25 fps
    audio = speech_samples(audio_seconds, 16000)

    path = write_mp4(tmp_path / "talk.mp4", frames, fps=25, audio=audio)

    video, sound = probe_video(path), probe_audio(path)
    assert video.has_audio and sound.codec == "aac"
    assert abs(sound.duration_s - video.duration_s) <= 1 / 25
    assert video.duration_s == pytest.approx(0.48, abs=0.01)


def test_it_keeps_audio_content_in_place(tmp_path: Path) -> None:
    frames = _gradient_frames(25)
    audio = np.zeros(16000, dtype=np.float32)
    audio[8000:] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)

    path = write_mp4(tmp_path / "tone.mp4", frames, fps=25, audio=audio)
    with av.open(str(path)) as container:
        decoded = np.concatenate(
            [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
        )
        rate = container.streams.audio[0].rate

    assert np.abs(decoded[: int(0.4 * rate)]).max() < 0.05  # the silent first half stays silent
    assert np.abs(decoded[int(0.6 * rate) : int(0.9 * rate)]).max() > 0.3


def test_it_never_exposes_a_half_written_file(tmp_path: Path) -> None:
    path = tmp_path / "partial.mp4"
    frames = _gradient_frames(3)

    with pytest.raises(RuntimeError):
        with Mp4Writer(path, fps=25, width=64, height=48) as writer:
            writer.write(frames[0])
            writer.write(frames[1])
            assert not path.exists()
            raise RuntimeError("the producer died")

    assert list(tmp_path.iterdir()) == []


def test_it_replaces_an_existing_file_only_on_close(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "clip.mp4", _gradient_frames(3), fps=25)

    writer = Mp4Writer(path, fps=25, width=64, height=48)
    for frame in _gradient_frames(7):
        writer.write(frame)
    assert probe_video(path).frame_count == 3
    writer.close()

    assert probe_video(path).frame_count == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_it_pads_odd_frame_sizes_to_even(tmp_path: Path) -> None:
    frames = _gradient_frames(3, width=65, height=47)

    path = write_mp4(tmp_path / "odd.mp4", frames, fps=25)

    decoded = read_video(path)
    assert decoded.frames[0].shape == (48, 66, 3)


def test_it_places_keyframes_every_gop_frames(tmp_path: Path) -> None:
    path = tmp_path / "gop.mp4"
    with Mp4Writer(path, fps=25, width=64, height=48, gop=5, tune="zerolatency") as writer:
        for frame in _gradient_frames(12):
            writer.write(frame)

    with av.open(str(path)) as container:
        keyframes = [i for i, packet in enumerate(container.demux(video=0)) if packet.is_keyframe]
    assert keyframes == [0, 5, 10]


def test_it_rejects_frames_of_the_wrong_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frame shape"):
        with Mp4Writer(tmp_path / "x.mp4", fps=25, width=64, height=48) as writer:
            writer.write(np.zeros((10, 10, 3), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_it_makes_a_video_without_faces(tmp_path: Path) -> None:
    path = make_noface_video(tmp_path / "noface.mp4", seconds=0.2)

    assert probe_video(path).frame_count == 5


def test_audio_starts_with_the_video_without_encoder_priming(tmp_path: Path) -> None:
    rate = 16000
    t = np.arange(rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / "one_second.mp4"
    with Mp4Writer(path, fps=25, width=64, height=64, audio=tone) as writer:
        for i in range(25):
            writer.write(np.full((64, 64, 3), i * 8, np.uint8))
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
    samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    # 48 kHz output: the tone is audible from the first few samples (not 1024 samples late)
    # and the decoded audio lasts one second plus at most the last AAC frame's padding.
    assert frames[0].pts == 0
    assert int(np.argmax(np.abs(samples) > 0.05)) < 16
    assert 48000 <= len(samples) < 48000 + 1024


def _chunk(tmp_path: Path, name: str, audio: np.ndarray, **kwargs: object) -> Path:
    """One second of video (25 frames) with ``audio`` (16 kHz), as the engine writes chunks."""
    path = tmp_path / name
    with Mp4Writer(path, fps=25, width=64, height=64, audio=audio, **kwargs) as writer:
        for i in range(25):
            writer.write(np.full((64, 64, 3), i * 8, np.uint8))
    return path


def _sine(first: int, count: int) -> np.ndarray:
    """tone()'s 440 Hz sine at 48 kHz, samples [first, first + count)."""
    return 0.5 * np.sin(2 * np.pi * 440 * np.arange(first, first + count) / 48000)


def test_a_chunk_with_its_neighbours_audio_decodes_true_up_to_both_edges(tmp_path: Path) -> None:
    signal = tone(3.0)
    middle = signal[16000:32000]
    alone = _chunk(tmp_path, "alone.mp4", middle)
    framed = _chunk(tmp_path, "framed.mp4", middle, audio_context=(signal[:16000], signal[32000:]))

    results = {}
    for path in (alone, framed):
        played, duration = decode_audio(path)
        whole, _ = decode_audio(path, edit_list=False)
        hidden = len(whole) - len(played)
        error = np.abs(played - _sine(48000, len(played)))
        results[path.name] = {
            "duration": duration,
            "body": error[2048:46000].max(),
            "head": error[:1024].max(),
            # what a player that ignores the edit list hears around the chunk's edges
            "past_end": error[48000:].max(),
            "before_start": np.abs(whole[hidden - 1024 : hidden] - _sine(48000 - 1024, 1024)).max(),
        }
    framed_r, alone_r = results["framed.mp4"], results["alone.mp4"]
    # Both play exactly one second; alone, the edges are silence where audio should be.
    assert framed_r["duration"] == alone_r["duration"] == 1.0
    assert alone_r["past_end"] > 0.4 and alone_r["before_start"] > 0.4
    # With the neighbours' audio, the edges carry the true waveform, as clean as the body.
    assert framed_r["head"] <= 1.5 * framed_r["body"] + 0.005
    assert framed_r["past_end"] < 0.05 and framed_r["before_start"] < 0.05
    assert framed_r["body"] < 0.05


def test_consecutive_chunks_decoded_one_by_one_join_into_the_original_waveform(
    tmp_path: Path,
) -> None:
    signal = tone(3.0)
    played = []
    for k in range(3):
        before, part, after = (
            signal[: k * 16000],
            signal[k * 16000 : (k + 1) * 16000],
            signal[(k + 1) * 16000 :],
        )
        path = _chunk(tmp_path, f"chunk_{k}.mp4", part, audio_context=(before, after))
        samples, duration = decode_audio(path)
        played.append(samples[: round(duration * 48000)])  # what the edit list lets play
    joined = np.concatenate(played)
    error = np.abs(joined - _sine(0, len(joined)))

    assert len(joined) == 3 * 48000  # no gap, no overlap
    interior = max(error[s + 4000 : s + 44000].max() for s in (0, 48000, 96000))
    for seam in (48000, 96000):
        assert error[seam - 1024 : seam + 1024].max() <= 1.5 * interior + 0.005, seam
    assert interior < 0.05


def _live_webm(path: Path, *, seconds: float, video: bool) -> Path:
    """A WebM written as a live stream, as a browser's MediaRecorder writes it: no duration in
    its header (and no cues)."""
    from fractions import Fraction

    with av.open(str(path), "w", format="webm", options={"live": "1"}) as out:
        if video:
            stream = out.add_stream("libvpx", rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for index, image in enumerate(_gradient_frames(int(seconds * 25))):
                frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                frame.pts, frame.time_base = index, Fraction(1, 25)
                out.mux(stream.encode(frame))
        else:
            stream = out.add_stream("libopus", rate=48000)
            stream.layout = "mono"
            tone = 0.3 * np.sin(np.arange(int(seconds * 48000)) / 48000 * 2 * np.pi * 440)
            for start in range(0, tone.size, 960):
                frame = av.AudioFrame.from_ndarray(
                    tone[None, start : start + 960].astype(np.float32), format="flt", layout="mono"
                )
                frame.sample_rate, frame.pts = 48000, start
                frame.time_base = Fraction(1, 48000)
                out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with av.open(str(path)) as check:  # the header really says nothing
        assert check.duration is None
    return path


def test_a_recording_without_a_stated_duration_is_measured(tmp_path: Path) -> None:
    audio = probe_audio(_live_webm(tmp_path / "voice.webm", seconds=2.0, video=False))
    assert audio.duration_s == pytest.approx(2.0, abs=0.05)
    clip = probe_video(_live_webm(tmp_path / "camera.webm", seconds=1.2, video=True))
    assert clip.duration_s == pytest.approx(1.2, abs=0.1) and clip.frame_count == 30
