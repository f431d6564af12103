"""The scheduler: one model thread batches the frames of every open stream.

Run on the real engine with the ``random-tiny`` profile (random weights: the frames are noise,
but every model, blend and encoder runs). Policy tests build streams by hand and ask the
scheduler for its next batch plan without running the models.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference.audio import load_audio
from inference.config import PROFILE_RANDOM_TINY, EngineConfig, GenerateConfig, PrepareConfig
from inference.errors import StreamCancelled
from inference.pipeline import JOB, LIVE, Engine
from inference.scheduler import (
    JOB_MAX_WAIT_S,
    Stream,
)
from inference.sinks import Chunk, Frame, QueueSink
from tests.media import make_face_video, make_speech_wav

FPS = 25
SIZE_A = (192, 240)
SIZE_B = (160, 208)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = Engine.from_config(EngineConfig(profile=PROFILE_RANDOM_TINY, seed=0))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def avatars(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scheduler-avatars")
    out = {}
    for name, size in (("a", SIZE_A), ("b", SIZE_B)):
        video = make_face_video(root / f"{name}.mp4", seconds=0.6, fps=FPS, size=size)
        config = PrepareConfig(batch_size=5, max_frames=8, idle_video=False)
        engine.prepare(video, root / name, config=config)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    root = tmp_path_factory.mktemp("scheduler-media")
    return load_audio(make_speech_wav(root / "speech.wav", seconds=2.0))


def _frames(sink: QueueSink, timeout: float = 60.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = sink.get(timeout=timeout)
        if item is QueueSink.END:
            return frames
        if isinstance(item, BaseException):
            raise item
        frames.append(item)
    raise AssertionError("the stream did not end")


def _open(
    engine: Engine,
    avatar: Path,
    audio: np.ndarray,
    kind: str = LIVE,
    batch: int = 4,
    wait_for_room: bool = False,
) -> tuple[Stream, QueueSink]:
    sink = QueueSink()
    config = GenerateConfig(batch_size=batch, fps=FPS, chunk_seconds=0.4)
    stream = engine.open_stream(
        avatar,
        audio,
        config=config,
        sink=lambda *_: sink,
        kind=kind,
        label=kind,
        wait_for_room=wait_for_room,
    )
    return stream, sink


def _close_enough(a: np.ndarray, b: np.ndarray) -> bool:
    # fp32 CPU kernels block the work differently per batch, so a few pixels may round to
    # the next uint8 level; anything more is a real mismatch
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return bool(diff.max() <= 1 and np.count_nonzero(diff) <= 20)


def _wait_idle(engine: Engine) -> None:
    assert engine.wait_idle(30)
    capacity = engine.capacity()
    assert capacity["active_streams"] == 0 and capacity["active_jobs"] == 0


# -- on the real engine ------------------------------------------------------------------------


def test_streams_of_two_avatars_share_batches_and_get_the_frames_they_get_alone(
    engine: Engine, avatars: dict[str, Path], speech: np.ndarray
) -> None:
    audio_a, audio_b = speech[:16000], speech[8000:24000]  # 25 frames each
    alone_a = list(engine.generate(avatars["a"], audio_a, config=GenerateConfig(batch_size=4)))
    alone_b = list(engine.generate(avatars["b"], audio_b, config=GenerateConfig(batch_size=4)))

    engine.scheduler.step_log.clear()
    with engine.scheduler.held():  # whole-video jobs: never degraded, so every frame is made
        stream_a, sink_a = _open(engine, avatars["a"], audio_a, kind=JOB)
        stream_b, sink_b = _open(engine, avatars["b"], audio_b, kind=JOB)
        deadline = time.monotonic() + 30
        while not (stream_a.features is not None and stream_b.features is not None):
            assert time.monotonic() < deadline, "audio features never came"
            time.sleep(0.01)
    together_a, together_b = _frames(sink_a), _frames(sink_b)

    steps = list(engine.scheduler.step_log)
    mixed = [s for s in steps if {ident for ident, _ in s} == {stream_a.ident, stream_b.ident}]
    assert mixed, f"no batch held frames of both streams: {steps}"
    assert max(len(s) for s in steps) <= engine.scheduler.max_batch
    for step in steps:  # each stream's batch_size caps its frames in one batch
        for ident in (stream_a.ident, stream_b.ident):
            assert sum(1 for i, _ in step if i == ident) <= 4
    assert [f.index for f in together_a] == list(range(25))
    assert [f.index for f in together_b] == list(range(25))
    assert all(_close_enough(f.image, g) for f, g in zip(together_a, alone_a, strict=True))
    assert all(_close_enough(f.image, g) for f, g in zip(together_b, alone_b, strict=True))
    assert together_a[0].image.shape == (SIZE_A[1], SIZE_A[0], 3)
    assert together_b[0].image.shape == (SIZE_B[1], SIZE_B[0], 3)
    _wait_idle(engine)


def test_live_frames_go_before_a_whole_video_job(
    engine: Engine, avatars: dict[str, Path], speech: np.ndarray
) -> None:
    engine.scheduler.step_log.clear()
    with engine.scheduler.held():
        job, job_sink = _open(engine, avatars["a"], speech, kind=JOB, batch=8)
        time.sleep(0.05)
        live, live_sink = _open(engine, avatars["b"], speech[:8000], kind=LIVE, batch=8)
        deadline = time.monotonic() + 30
        while job.features is None or live.features is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # the job's wait counts from here, not from when its audio features were ready
        job.last_served = time.monotonic()
    live_frames = _frames(live_sink)
    job_frames = _frames(job_sink)
    steps = list(engine.scheduler.step_log)
    assert {ident for ident, _ in steps[0]} == {live.ident}
    assert len(live_frames) == 12 and len(job_frames) == 50
    first_job_step = next(n for n, s in enumerate(steps) if any(i == job.ident for i, _ in s))
    live_done_step = max(n for n, s in enumerate(steps) if any(i == live.ident for i, _ in s))
    assert first_job_step > 0 and live_done_step < len(steps) - 1
    _wait_idle(engine)


def test_cancelling_one_stream_leaves_the_others_running(
    engine: Engine, avatars: dict[str, Path], speech: np.ndarray
) -> None:
    one, one_sink = _open(engine, avatars["a"], speech)
    two, two_sink = _open(engine, avatars["b"], speech)
    first = one_sink.get(timeout=60)
    assert isinstance(first, Frame)
    one.cancel()
    frames = _frames(two_sink)
    assert len(frames) == 50
    with pytest.raises(StreamCancelled):
        one.done.result(timeout=10)
    assert two.done.result(timeout=10).frames == 50
    ident = one.ident
    later = [s for s in engine.scheduler.step_log if any(i == ident for i, _ in s)]
    assert max(index for s in later for i, index in s if i == ident) < 50
    _wait_idle(engine)


def test_a_failing_sink_fails_its_stream_only(
    engine: Engine, avatars: dict[str, Path], speech: np.ndarray
) -> None:
    class Broken(QueueSink):
        def write(self, frame: Frame) -> bool:
            if frame.index == 3:
                raise OSError("disk full")
            return super().write(frame)

    broken_sink = Broken()
    config = GenerateConfig(batch_size=4, fps=FPS)
    broken = engine.open_stream(
        avatars["a"], speech[:16000], config=config, sink=lambda *_: broken_sink
    )
    fine, fine_sink = _open(engine, avatars["b"], speech[:16000])
    with pytest.raises(OSError, match="disk full"):
        broken.done.result(timeout=60)
    assert len(_frames(fine_sink)) == 25
    _wait_idle(engine)


def test_a_stream_behind_its_clock_repeats_frames_and_keeps_all_its_audio(
    engine: Engine, avatars: dict[str, Path], speech: np.ndarray
) -> None:
    sink = QueueSink()
    avatar = engine.avatar(avatars["a"])
    config = GenerateConfig(batch_size=4, fps=FPS)
    stream = engine.scheduler.open(
        avatar,
        speech,
        fps=FPS,
        total=50,
        sink=sink,
        features=lambda samples: engine.audio_features(samples, config=config),
        kind=LIVE,
        lead_s=-5.0,  # five seconds late from the start
        batch_cap=4,
    )
    frames = _frames(sink)
    assert [f.index for f in frames] == list(range(50))
    repeated = [f for f in frames if f.repeated]
    assert repeated and not frames[0].repeated
    for frame in repeated:
        assert frame.image is frames[frame.index - 1].image or np.array_equal(
            frame.image, frames[frame.index - 1].image
        )
    spans = [(f.audio_start, f.audio_end) for f in frames]
    assert spans[0][0] == 0 and spans[-1][1] == 32000
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    result = stream.done.result(timeout=10)
    assert result.repeated_frames == len(repeated) and result.frames == 50
    _wait_idle(engine)


def test_chunks_are_handed_over_as_they_are_written_and_a_refusal_stops_the_stream(
    engine: Engine, avatars: dict[str, Path], speech: np.ndarray, tmp_path: Path
) -> None:
    seen: list[Chunk] = []

    def on_chunk(chunk: Chunk) -> bool:
        seen.append(chunk)
        assert chunk.path.is_file()
        return chunk.index < 1  # refuse after the second chunk

    config = GenerateConfig(batch_size=4, fps=FPS, chunk_seconds=0.4)
    stream = engine.stream_chunks(
        avatars["a"], speech, tmp_path, config=config, on_chunk=on_chunk, audio_track="a.mp4"
    )
    with pytest.raises(StreamCancelled):
        stream.done.result(timeout=60)
    assert [c.index for c in seen] == [0, 1]
    assert all(c.frame_count == 10 and c.total_chunks == 5 for c in seen)
    assert (tmp_path / "a.mp4").is_file()
    assert not list(tmp_path.glob(".*.part"))  # nothing half-written is left
    _wait_idle(engine)


def test_calibration_measures_frames_per_second_by_batch_size(engine: Engine) -> None:
    measured = engine.calibrate()
    assert set(measured) == {1, engine.scheduler.max_batch}
    capacity = engine.capacity()
    assert capacity["measured"] is True and capacity["frames_per_s"] > 0
    assert set(capacity["frames_per_s_by_batch"]) >= {"1", str(engine.scheduler.max_batch)}
    assert capacity["device"] == "cpu"


def test_capacity_counts_the_open_streams_and_their_demand(
    engine: Engine, avatars: dict[str, Path], speech: np.ndarray
) -> None:
    with engine.scheduler.held():
        live, live_sink = _open(engine, avatars["a"], speech)
        job, job_sink = _open(engine, avatars["b"], speech, kind=JOB)
        capacity = engine.capacity()
    assert capacity["active_streams"] == 1 and capacity["active_jobs"] == 1
    assert capacity["live_frames_per_s"] == FPS
    assert capacity["stream_seconds_left"] == pytest.approx(2.0)
    _frames(live_sink), _frames(job_sink)
    _wait_idle(engine)


# -- the policy, without running the models ---------------------------------------------------


class _NullSink(QueueSink):
    pass


def _fake(
    engine: Engine,
    ident: int,
    kind: str,
    *,
    started: float,
    total: int = 100,
    window: int = 16,
    batch_cap: int = 8,
    lead: float = 0.5,
    head_frames: int = 0,
) -> Stream:
    stream = Stream(
        ident=ident,
        kind=kind,
        avatar=engine.avatar(next(iter(engine.cache.keys()))),
        samples=np.zeros(16000 * 4, np.float32),
        fps=FPS,
        total=total,
        sink=_NullSink(),
        window=window,
        lead_s=lead,
        batch_cap=batch_cap,
        cancelled=None,
        label=f"fake-{ident}",
        head_frames=head_frames,
    )
    stream.features = torch.zeros((total, 50, 384))
    stream.started_at = stream.last_served = started
    return stream


def _plan(engine: Engine, streams: list[Stream], now: float) -> list[tuple[int, int]]:
    from inference.scheduler import Scheduler

    scheduler: Any = Scheduler.__new__(Scheduler)
    scheduler.max_batch = 8
    scheduler.degrade = True
    scheduler._streams = {s.ident: s for s in streams}
    plan, _ = Scheduler._plan(scheduler, now)
    return [(stream.ident, index) for stream, index in plan]


def test_the_plan_takes_live_frames_by_deadline_and_a_job_after_them(
    engine: Engine, avatars: dict[str, Path]
) -> None:
    engine.warm(avatars["a"])
    now = 100.0
    early = _fake(engine, 1, LIVE, started=now - 0.1)  # its frames are due 0.1 s sooner
    late = _fake(engine, 2, LIVE, started=now)
    job = _fake(engine, 3, JOB, started=now)
    plan = _plan(engine, [job, late, early], now)
    # deadlines: early i at now + 0.4 + i/25, late i at now + 0.5 + i/25
    assert plan == [(1, 0), (1, 1), (1, 2), (2, 0), (1, 3), (2, 1), (1, 4), (2, 2)]
    job.last_served = now - 10  # the job waited: its turn comes before any live frame
    early.next_index = late.next_index = 0
    assert _plan(engine, [job, late, early], now)[0] == (3, 0)


def test_a_job_that_waited_gets_a_frame_even_when_live_streams_are_behind(
    engine: Engine, avatars: dict[str, Path]
) -> None:
    engine.warm(avatars["a"])
    now = 100.0
    behind = [_fake(engine, n, LIVE, started=now - 3.0, batch_cap=8) for n in (1, 2)]
    job = _fake(engine, 3, JOB, started=now)
    assert 3 not in {i for i, _ in _plan(engine, [*behind, job], now)}
    job.last_served = now - JOB_MAX_WAIT_S - 2.5  # waited: now due before the live frames
    for stream in behind:
        stream.next_index = 0
    assert (3, 0) in _plan(engine, [*behind, job], now)


def test_the_plan_respects_windows_caps_and_ended_streams(
    engine: Engine, avatars: dict[str, Path]
) -> None:
    engine.warm(avatars["a"])
    now = 100.0
    narrow = _fake(engine, 1, LIVE, started=now - 1, window=3)
    capped = _fake(engine, 2, LIVE, started=now - 1, batch_cap=2)
    ended = _fake(engine, 3, LIVE, started=now - 5)
    ended.ended = True
    plan = _plan(engine, [narrow, capped, ended], now)
    assert sorted(plan) == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]


def test_a_stream_makes_its_head_frames_in_one_batch_past_its_cap(
    engine: Engine, avatars: dict[str, Path]
) -> None:
    """A WebRTC viewer shows nothing before its prebuffer (5 frames at 25 fps) is queued: a
    stream capped at 2 frames a batch makes those 5 in one batch, then goes back to 2."""
    engine.warm(avatars["a"])
    now = 100.0
    fresh = _fake(engine, 1, LIVE, started=now, batch_cap=2, head_frames=5, window=4)
    other = _fake(engine, 2, LIVE, started=now - 0.5, batch_cap=2)
    assert fresh.window == 5  # room for the whole head
    first = _plan(engine, [fresh, other], now)
    assert [i for s, i in first if s == 1] == [0, 1, 2, 3, 4]
    assert [i for s, i in first if s == 2] == [0, 1]  # the other keeps its share
    fresh.delivered = 5  # the head went out
    assert [i for s, i in _plan(engine, [fresh], now) if s == 1] == [5, 6]
    # Part of the head already made: what is left of it, or the cap when that is more.
    half = _fake(engine, 3, LIVE, started=now, batch_cap=2, head_frames=5)
    half.next_index = half.delivered = 2
    assert [i for _, i in _plan(engine, [half], now)] == [2, 3, 4]
    max_batch_bounds = _fake(engine, 4, LIVE, started=now, batch_cap=1, head_frames=12)
    assert len(_plan(engine, [max_batch_bounds], now)) == 8


def test_a_stream_times_its_first_frame_audio_features_then_the_batch_that_made_it(
    engine: Engine, avatars: dict[str, Path], speech: np.ndarray
) -> None:
    """The first frame waits for the utterance's audio features, then for the model batch
    that makes it (with the rest of the head): each is timed, and the first frame after both."""
    _wait_idle(engine)
    frames: list[Frame] = []
    stream = engine.stream_frames(
        avatars["a"],
        speech[:16000],
        config=GenerateConfig(batch_size=2, fps=FPS),
        on_frame=lambda frame: frames.append(frame) is None,
        head_frames=5,
    )
    stream.done.result(timeout=60)
    timings = stream.timings
    assert timings["first_batch_frames"] == 5  # alone: the head, in one batch
    assert timings["audio_features_s"] > 0 and timings["first_batch_s"] > 0
    assert timings["first_frame_s"] >= timings["audio_features_s"] + timings["first_batch_s"]
    assert len(frames) == 25 and timings["total_s"] >= timings["first_frame_s"]


def test_a_late_stream_steps_down_then_up_again(engine: Engine, avatars: dict[str, Path]) -> None:
    engine.warm(avatars["a"])
    now = 100.0
    stream = _fake(engine, 1, LIVE, started=now - 2.0, window=40, batch_cap=4)
    stream.next_index = stream.delivered = 1  # frame 0 is always generated
    plan = _plan(engine, [stream], now)
    assert stream.stride == 2
    assert [index for _, index in plan] == [2, 4, 6, 8]  # odd frames repeat the one before
    assert all(stream.slots[i].repeated for i in (1, 3, 5, 7))
    stream.started_at = now + 5.0  # far ahead now
    stream.stride_changed_at = now - 2.0
    _plan(engine, [stream], now)
    assert stream.stride == 1


def test_a_live_stream_beyond_capacity_waits_until_there_is_room(
    engine: Engine, avatars: dict[str, Path], speech: np.ndarray
) -> None:
    from inference.scheduler import _Rate

    scheduler = engine.scheduler
    saved = dict(scheduler._rates)
    scheduler._rates.clear()
    scheduler._rates[1] = _Rate(30.0)  # room for one 25-fps stream
    try:
        scheduler.step_log.clear()
        first, first_sink = _open(engine, avatars["a"], speech[:16000])
        deadline = time.monotonic() + 30
        while first.features is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second, second_sink = _open(engine, avatars["b"], speech[:16000], wait_for_room=True)
        third, third_sink = _open(engine, avatars["b"], speech[:16000])  # admitted: runs
        while second.features is None or third.features is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert second.pending and not third.pending
        assert engine.capacity()["pending_streams"] == 1
        assert len(_frames(first_sink)) == 25 and len(_frames(third_sink)) == 25
        assert len(_frames(second_sink)) == 25
    finally:
        scheduler._rates.clear()
        scheduler._rates.update(saved)
    steps = list(scheduler.step_log)
    last_of_first = max(n for n, s in enumerate(steps) if any(i == first.ident for i, _ in s))
    first_of_second = min(n for n, s in enumerate(steps) if any(i == second.ident for i, _ in s))
    assert last_of_first < first_of_second
    _wait_idle(engine)


def test_capacity_counts_the_cpu_stages_once_measured(engine: Engine) -> None:
    capacity = engine.capacity()  # after the streams above: blend and delivery were timed
    assert set(capacity["cpu_ms_per_frame"]) == {"blend", "delivery"}
    assert 0 < capacity["frames_per_s"] < capacity["model_frames_per_s"]


def test_blending_on_the_device_gives_the_frames_of_the_cpu_blend(
    engine: Engine, avatars: dict[str, Path], speech: np.ndarray, tmp_path: Path
) -> None:
    """The CUDA path (paste-back and I420 as tensor ops), run here on the CPU."""
    import av

    from inference.device_blend import bgr_to_yuv420p

    device = Engine(engine.models, engine.face_backend, device_blend=True)
    try:
        audio = speech[:8000]  # 12 frames
        cpu = list(engine.generate(avatars["a"], audio, config=GenerateConfig(batch_size=4)))
        sink = QueueSink()
        device.open_stream(
            avatars["a"], audio, config=GenerateConfig(batch_size=4), sink=lambda *_: sink, kind=JOB
        )
        frames = _frames(sink)
        assert len(frames) == len(cpu) == 12
        for frame, reference in zip(frames, cpu, strict=True):
            assert frame.image is None and frame.yuv is not None
            expected = bgr_to_yuv420p(torch.from_numpy(reference[None]))[0].numpy()
            diff = np.abs(frame.yuv.astype(np.int16) - expected.astype(np.int16))
            assert diff.max() <= 1, f"frame {frame.index}"
            assert frame.bgr().shape == reference.shape
        chunks = list(
            device.generate_chunks(
                avatars["a"],
                audio,
                tmp_path,
                config=GenerateConfig(batch_size=4, chunk_seconds=0.2),
            )
        )
        assert [c.frame_count for c in chunks] == [5, 5, 2]
        with av.open(str(chunks[0].path)) as container:
            decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
        assert len(decoded) == 5 and decoded[0].shape == cpu[0].shape
        assert float(np.abs(decoded[0].astype(int) - cpu[0].astype(int)).mean()) < 6
    finally:
        device.close()


def test_batches_padded_to_warmed_sizes_give_the_same_frames(
    engine: Engine, avatars: dict[str, Path], speech: np.ndarray
) -> None:
    audio = speech[:8000]
    config = GenerateConfig(batch_size=3)
    reference = list(engine.generate(avatars["b"], audio, config=config))
    engine.scheduler.padded_sizes = [4, 8]
    try:
        padded = list(engine.generate(avatars["b"], audio, config=config))
    finally:
        engine.scheduler.padded_sizes = []
    assert len(padded) == len(reference) == 12
    assert all(_close_enough(a, b) for a, b in zip(padded, reference, strict=True))


def test_accel_options_come_from_a_comma_list() -> None:
    from inference.accel import AccelOptions, parse_options, warm_sizes

    assert parse_options("") == AccelOptions()
    assert parse_options("channels_last, cuda_graphs") == AccelOptions(
        channels_last=True, cuda_graphs=True
    )
    assert parse_options("compile=max-autotune").compile == "max-autotune"
    with pytest.raises(ValueError, match="unknown accel option"):
        parse_options("turbo")
    assert warm_sizes(48) == [1, 2, 4, 8, 16, 32, 48]
    assert warm_sizes(1) == [1]


@pytest.mark.parametrize("device_blend", [False, True])
def test_a_live_stream_starts_at_the_idle_loop_position_it_is_given(
    engine: Engine, avatars: dict[str, Path], speech: np.ndarray, device_blend: bool
) -> None:
    """``cycle_start``: frame i shows the avatar's loop position cycle_start + i (outside the
    pasted face the picture is the stored frame's, exactly or within the I420 rounding).

    Without degradation: on a loaded machine a live stream behind its clock would repeat its
    last frame, which shows the position before (``test_a_stream_behind_its_clock_...``)."""
    runner = Engine(engine.models, engine.face_backend, device_blend=device_blend, degrade=False)
    avatar = runner.avatar(avatars["a"])
    frames: list[Frame] = []
    try:
        stream = runner.stream_frames(
            avatars["a"],
            speech[:6400],  # 10 frames
            config=GenerateConfig(batch_size=4, fps=FPS),
            on_frame=lambda frame: frames.append(frame) is None,
            cycle_start=5,
        )
        stream.done.result(timeout=60)
    finally:
        runner.close()
    assert [f.index for f in frames] == list(range(10))
    moved = 0
    for frame in frames:
        stored = avatar.frame_index(5 + frame.index)
        x0, y0, x1, y1 = avatar.mask_boxes[stored]
        picture = frame.bgr().astype(int)
        outside = np.ones(picture.shape[:2], dtype=bool)
        outside[max(0, y0) : y1, max(0, x0) : x1] = False
        diff = np.abs(picture - avatar.frames[stored].astype(int))[outside]
        if device_blend:  # I420 and back: chroma subsampling blurs colour edges a little
            assert diff.mean() < 1.0, f"frame {frame.index}"
        else:
            assert diff.max() == 0, f"frame {frame.index}"
        unshifted = avatar.frames[avatar.frame_index(frame.index)].astype(int)
        moved += int(np.abs(picture - unshifted)[outside].mean() > 2 * max(diff.mean(), 0.5))
    assert moved >= 5  # the loop really was shifted: most frames differ from the unshifted ones
