"""Concurrent live streams on one engine: the scheduler against one batch loop per stream.

Not a test. Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.streams --device cuda --streams 1,2,4,8,16,24
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.streams --profile random-tiny --streams 1,2,4,8

For each K in ``--streams``, K utterances start at the same moment, twice, in interleaved
order (so both modes see the same load from other processes):

- **scheduler**: K ``Engine.stream_chunks`` opened together (no thread per stream); the
  scheduler's one model thread batches the frames of every open stream, chunks are encoded on
  its delivery threads;
- **baseline**: the design before the scheduler, rebuilt here: one thread per stream runs its
  own batches of ``--batch-size`` frames through ``predict_latents`` + ``decode_latents`` on
  the same loaded models, blends each frame and encodes its chunks in that same thread.

First, K = 1 runs with the scheduler at each ``--single-batches`` size: the best of those is
the "best single-stream batched throughput" the aggregates are compared with.

A stream *keeps real time* when chunk i (0-based) is ready by ``first_chunk_s + i *
chunk_seconds``: a player that starts on the first chunk never stalls. The scheduler degrades
a late live stream (it repeats frames instead of generating them); repeated frames are counted
and left out of the generated frames/s. The default profile is ``random-full``: the real
MuseTalk v1.5 architecture with RANDOM weights (real cost, noise output). Results go to
``bench/results/streams-<profile>-<device>.json`` and ``.md``, rewritten after every round.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from bench.engine import (
    DEFAULT_AUDIO,
    DEFAULT_VIDEO,
    RESULTS,
    _environment,
    _log,
    _media,
    prepared_avatar,
    write_results,
)
from inference.accel import parse_options
from inference.audio import SAMPLE_RATE, frame_count, load_audio
from inference.avatar_store import PreparedAvatar
from inference.config import PROFILE_RANDOM_FULL, PROFILES, EngineConfig, GenerateConfig
from inference.models import predict_latents
from inference.pipeline import Engine, chunk_sink
from inference.sinks import Chunk, ChunkSink, Frame, audio_bounds
from inference.vae import decode_latents

SCHEDULER = "scheduler"
BASELINE = "baseline"
TARGETS = {
    "cuda_realtime_streams": ">= 20 (H100-class GPU)",
    "cuda_first_frame_alone_s": "<= 0.25",
    "cpu_k4_over_best_single": ">= 0.9",
    "cpu_k4_scheduler_over_baseline": ">= 1.5",
}


@dataclass
class StreamRun:
    """One utterance; times are seconds from the round's common start."""

    chunk_ready_s: list[float] = field(default_factory=list)
    first_frame_s: float = 0.0
    frames: int = 0
    repeated_frames: int = 0
    error: str = ""

    def on_chunk(self, t0: float) -> Callable[[Chunk], bool]:
        def handed(chunk: Chunk) -> bool:  # on a delivery thread
            self.chunk_ready_s.append(time.monotonic() - t0)
            return True

        return handed

    def worst_lateness_s(self, chunk_seconds: float) -> float:
        """How late the latest chunk was for a player that started on the first one (<= 0:
        never late)."""
        first = self.chunk_ready_s[0]
        return max(t - (first + i * chunk_seconds) for i, t in enumerate(self.chunk_ready_s))


@dataclass
class RoundResult:
    mode: str
    streams: int
    batch_size: int
    chunk_seconds: float
    audio_seconds: float
    frames_per_stream: int
    wall_s: float
    cpu_s: float  # time.process_time() of this process (all threads)
    frames_per_s: float  # frames handed to the sinks, all streams, repeated ones included
    generated_frames_per_s: float  # without the repeated (degraded) frames
    repeated_frames: int
    first_frame_median_s: float
    first_frame_max_s: float
    first_chunk_median_s: float
    first_chunk_max_s: float
    complete_max_s: float
    realtime_factor: float  # audio s / s until the slowest stream's last chunk
    kept_up: int  # streams with no late chunk
    worst_lateness_s: float
    max_waiting_streams: int  # scheduler: most live streams seen waiting for room at once
    peak_cuda_bytes: int
    loadavg_before: float
    loadavg_after: float
    errors: list[str] = field(default_factory=list)


# -- the two modes ------------------------------------------------------------------------------


def _scheduler_round(
    engine: Engine,
    avatar_dir: Path,
    samples: np.ndarray,
    config: GenerateConfig,
    streams: int,
    scratch: Path,
) -> tuple[list[StreamRun], int]:
    """K streams opened while the scheduler is held, so their frames start together."""
    runs = [StreamRun() for _ in range(streams)]
    with engine.scheduler.held():
        t0 = time.monotonic()
        opened = [
            engine.stream_chunks(
                avatar_dir,
                samples,
                scratch / f"s{k}",
                config=config,
                on_chunk=run.on_chunk(t0),
                label=f"bench-{k}",
            )
            for k, run in enumerate(runs)
        ]
    waiting = 0
    while not all(stream.done.done() for stream in opened):
        # held back by the scheduler's admission (a newer scheduler field: absent is 0)
        waiting = max(waiting, sum(1 for s in opened if getattr(s, "pending", False)))
        time.sleep(0.05)
    for stream, run in zip(opened, runs, strict=True):
        run.first_frame_s = stream.opened_at - t0 + stream.timings.get("first_frame_s", 0.0)
        try:
            result = stream.done.result()
        except Exception as exc:  # reported in the results, never hidden
            run.error = f"{type(exc).__name__}: {exc}"
            continue
        run.frames, run.repeated_frames = result.frames, result.repeated_frames
    return runs, waiting


def _decode(engine: Engine, predicted: torch.Tensor) -> np.ndarray:
    """VAE decode in the engine's slices (4 frames on CPU, the whole batch on CUDA)."""
    step = engine.decode_batch_size or predicted.shape[0]
    parts = [
        decode_latents(engine.models.vae, predicted[start : start + step])
        for start in range(0, predicted.shape[0], step)
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _chunk_sink(
    avatar: PreparedAvatar,
    samples: np.ndarray,
    out_dir: Path,
    config: GenerateConfig,
    run: StreamRun,
    t0: float,
) -> tuple[ChunkSink, int]:
    total = frame_count(len(samples), config.fps)
    sink = chunk_sink(out_dir, config, run.on_chunk(t0))(avatar, samples, total)
    return cast(ChunkSink, sink), total


def _baseline_stream(
    engine: Engine,
    avatar: PreparedAvatar,
    samples: np.ndarray,
    out_dir: Path,
    config: GenerateConfig,
    start: threading.Event,
    t0: list[float],
    run: StreamRun,
) -> None:
    """The previous design: this thread makes, blends and encodes every frame of its stream."""
    start.wait()
    try:
        features = engine.audio_features(samples, config=config).chunks
        sink, total = _chunk_sink(avatar, samples, out_dir, config, run, t0[0])
        for first in range(0, total, config.batch_size):
            indices = range(first, min(first + config.batch_size, total))
            latents = avatar.latents[[avatar.frame_index(i) for i in indices]]
            faces = _decode(engine, predict_latents(engine.models, latents, features[indices]))
            for i, face in zip(indices, faces, strict=True):
                image = engine._blend(avatar, i, face)
                if i == 0:
                    run.first_frame_s = time.monotonic() - t0[0]
                begin, end = audio_bounds(i, 1, config.fps)
                sink.write(Frame(i, image, config.fps, begin, end))
                run.frames += 1
        sink.close()
    except Exception as exc:  # reported in the results, never hidden
        run.error = f"{type(exc).__name__}: {exc}"


def _baseline_round(
    engine: Engine,
    avatar_dir: Path,
    samples: np.ndarray,
    config: GenerateConfig,
    streams: int,
    scratch: Path,
) -> tuple[list[StreamRun], int]:
    avatar = engine.avatar(avatar_dir)
    start, t0 = threading.Event(), [0.0]
    runs = [StreamRun() for _ in range(streams)]
    threads = [
        threading.Thread(
            target=_baseline_stream,
            args=(engine, avatar, samples, scratch / f"s{k}", config, start, t0, run),
            name=f"baseline-{k}",
        )
        for k, run in enumerate(runs)
    ]
    for thread in threads:
        thread.start()
    t0[0] = time.monotonic()
    start.set()
    for thread in threads:
        thread.join()
    return runs, 0


# -- one round ----------------------------------------------------------------------------------


def run_round(
    engine: Engine,
    avatar_dir: Path,
    samples: np.ndarray,
    *,
    mode: str,
    streams: int,
    batch_size: int,
    chunk_seconds: float,
    scratch: Path,
) -> RoundResult:
    config = GenerateConfig(batch_size=batch_size, chunk_seconds=chunk_seconds)
    device = engine.models.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    load_before = os.getloadavg()[0]
    cpu, began = time.process_time(), time.monotonic()
    go = _scheduler_round if mode == SCHEDULER else _baseline_round
    runs, waiting = go(engine, avatar_dir, samples, config, streams, scratch)
    wall, cpu = time.monotonic() - began, time.process_time() - cpu
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return _summarize(
        runs,
        mode=mode,
        config=config,
        samples=samples,
        wall=wall,
        cpu=cpu,
        waiting=waiting,
        peak=peak,
        loads=(load_before, os.getloadavg()[0]),
    )


def _summarize(
    runs: list[StreamRun],
    *,
    mode: str,
    config: GenerateConfig,
    samples: np.ndarray,
    wall: float,
    cpu: float,
    waiting: int,
    peak: int,
    loads: tuple[float, float],
) -> RoundResult:
    audio_seconds = len(samples) / SAMPLE_RATE
    ok = [r for r in runs if not r.error and r.chunk_ready_s]
    lateness = [r.worst_lateness_s(config.chunk_seconds) for r in ok]
    delivered = sum(r.frames for r in runs)
    repeated = sum(r.repeated_frames for r in runs)
    firsts = [r.first_frame_s for r in ok]
    chunks = [r.chunk_ready_s[0] for r in ok]
    complete = max((r.chunk_ready_s[-1] for r in ok), default=wall)
    return RoundResult(
        mode=mode,
        streams=len(runs),
        batch_size=config.batch_size,
        chunk_seconds=config.chunk_seconds,
        audio_seconds=round(audio_seconds, 3),
        frames_per_stream=frame_count(len(samples), config.fps),
        wall_s=round(wall, 3),
        cpu_s=round(cpu, 2),
        frames_per_s=round(delivered / wall, 3),
        generated_frames_per_s=round((delivered - repeated) / wall, 3),
        repeated_frames=repeated,
        first_frame_median_s=round(statistics.median(firsts), 3) if firsts else 0.0,
        first_frame_max_s=round(max(firsts, default=0.0), 3),
        first_chunk_median_s=round(statistics.median(chunks), 3) if chunks else 0.0,
        first_chunk_max_s=round(max(chunks, default=0.0), 3),
        complete_max_s=round(complete, 3),
        realtime_factor=round(audio_seconds / complete, 3),
        kept_up=sum(1 for late in lateness if late <= 0),
        worst_lateness_s=round(max(lateness, default=0.0), 3),
        max_waiting_streams=waiting,
        peak_cuda_bytes=peak,
        loadavg_before=round(loads[0], 2),
        loadavg_after=round(loads[1], 2),
        errors=[r.error for r in runs if r.error],
    )


# -- the run ------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    parser.add_argument("--profile", default=PROFILE_RANDOM_FULL, choices=PROFILES)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--streams", default="1,2,4", help="comma-separated concurrent streams")
    parser.add_argument(
        "--baseline-streams",
        default=None,
        help="the K of --streams that also run the baseline (default: all of them)",
    )
    parser.add_argument("--chunk-seconds", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per utterance")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per batch per stream")
    parser.add_argument(
        "--single-batches", default="4,8", help="K=1 scheduler batch sizes for the best single"
    )
    parser.add_argument(
        "--max-batch", type=int, default=0, help="scheduler max batch (0: engine's)"
    )
    parser.add_argument("--warm-seconds", type=float, default=1.0, help="untimed warm-up stream")
    parser.add_argument("--no-calibrate", action="store_true", help="skip Engine.calibrate()")
    parser.add_argument(
        "--no-degrade",
        action="store_true",
        help="the scheduler generates every frame of a late stream (pure throughput)",
    )
    parser.add_argument(
        "--accel", default="", help="MUSETALK_ACCEL-style model speed-ups, e.g. channels_last"
    )
    parser.add_argument("--avatar-frames", type=int, default=25)
    parser.add_argument("--avatar-dir", type=Path, default=None, help="a prepared avatar")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--budget-seconds", type=float, default=0, help="stop adding rounds after")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--note", default="", help="free text stored with the results")
    return parser.parse_args(argv)


class Bench:
    """The loaded engine, the prepared avatar and the rounds so far (written after each)."""

    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.args = args
        self.scratch = scratch
        self.began = time.monotonic()
        _log(f"loading {args.profile} on {args.device} (RANDOM weights: real cost, noise output)")
        config = EngineConfig(profile=args.profile, models_dir=args.models_dir, device=args.device)
        self.engine = Engine.from_config(
            config, max_batch=args.max_batch, degrade=not args.no_degrade
        )
        self.env = _environment(self.engine, args)
        self.env["degrade"] = not args.no_degrade
        self.env["host"] = platform.node()
        self.env["accel"] = parse_options(args.accel).label()
        if args.accel:
            began = time.monotonic()
            sizes = self.engine.accelerate(parse_options(args.accel))
            self.env["accel_warm_s"] = round(time.monotonic() - began, 1)
            _log(
                f"accel {self.env['accel']}: warmed batch sizes {sizes} in "
                f"{self.env['accel_warm_s']} s"
            )
        video, audio = _media(args, scratch)
        speech = load_audio(audio)
        self.samples = np.ascontiguousarray(np.resize(speech, round(args.seconds * SAMPLE_RATE)))
        self.avatar_dir, manifest = prepared_avatar(self.engine, args, video, scratch)
        self.avatar = {
            "frames": manifest.frame_count,
            "width": manifest.frame_width,
            "height": manifest.frame_height,
            "video": str(video),
        }
        self.calibration: dict[str, float] = {}
        self.single: list[RoundResult] = []
        self.rounds: list[RoundResult] = []

    def round(self, mode: str, streams: int, batch_size: int) -> RoundResult:
        result = run_round(
            self.engine,
            self.avatar_dir,
            self.samples,
            mode=mode,
            streams=streams,
            batch_size=batch_size,
            chunk_seconds=self.args.chunk_seconds,
            scratch=self.scratch / f"r{len(self.single) + len(self.rounds)}-{mode}",
        )
        _log(
            f"{mode} K={streams} batch {batch_size}: {result.generated_frames_per_s:.2f} "
            f"frames/s, first frame {result.first_frame_median_s:.2f} s, first chunk "
            f"{result.first_chunk_median_s:.2f} s (max {result.first_chunk_max_s:.2f}), kept "
            f"up {result.kept_up}/{streams}, repeated {result.repeated_frames}, load "
            f"{result.loadavg_before:.1f}->{result.loadavg_after:.1f}"
            + (f", errors {result.errors}" if result.errors else "")
        )
        return result

    def over_budget(self) -> bool:
        spent = time.monotonic() - self.began
        return bool(self.args.budget_seconds) and spent > self.args.budget_seconds

    def warm(self) -> None:
        """Kernel selection, allocator growth and the first capacity figures, untimed."""
        if not self.args.no_calibrate:
            measured = self.engine.calibrate()
            self.calibration = {str(size): round(fps, 2) for size, fps in measured.items()}
            _log(f"calibrated: {self.calibration} frames/s by batch")
        if self.args.warm_seconds > 0:
            warm = self.samples[: round(self.args.warm_seconds * SAMPLE_RATE)]
            run_round(
                self.engine,
                self.avatar_dir,
                warm,
                mode=SCHEDULER,
                streams=1,
                batch_size=self.args.batch_size,
                chunk_seconds=self.args.chunk_seconds,
                scratch=self.scratch / "warm",
            )

    def summary(self) -> dict[str, Any]:
        return {
            "environment": {**self.env, "loadavg_now": list(os.getloadavg())},
            "note": self.args.note,
            "batch_size": self.args.batch_size,
            "max_batch": self.engine.scheduler.max_batch,
            "calibration": self.calibration,
            "capacity": self.engine.capacity(),
            "avatar": self.avatar,
            "single": [asdict(r) for r in self.single],
            "rounds": [asdict(r) for r in self.rounds],
            "ratios": ratios(self.single, self.rounds),
        }

    def save(self) -> None:
        summary = self.summary()
        write_results(self.args.out_dir, f"streams-{self.args.profile}", summary, markdown(summary))


def run(args: argparse.Namespace) -> None:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        bench = Bench(args, Path(tmp))
        bench.warm()
        for batch in _ints(args.single_batches):
            bench.single.append(bench.round(SCHEDULER, 1, batch))
            bench.save()
        for n, streams in enumerate(_ints(args.streams)):
            if bench.over_budget():
                _log(f"time budget spent: skipping K={streams}")
                continue
            # interleaved, the order flipped every K: both modes see the same outside load
            modes = (SCHEDULER, BASELINE) if n % 2 == 0 else (BASELINE, SCHEDULER)
            if args.baseline_streams is not None and streams not in _ints(args.baseline_streams):
                modes = (SCHEDULER,)
            for mode in modes:
                bench.rounds.append(bench.round(mode, streams, args.batch_size))
                bench.save()
        bench.engine.close()


# -- the report ---------------------------------------------------------------------------------


def _find(rounds: list[dict[str, Any]] | list[RoundResult], mode: str, k: int) -> Any:
    for r in rounds:
        row = asdict(r) if isinstance(r, RoundResult) else r
        if row["mode"] == mode and row["streams"] == k:
            return row
    return None


def ratios(single: list[RoundResult], rounds: list[RoundResult]) -> dict[str, Any]:
    """The issue's figures: best single-stream throughput, K=4 against it and the baseline,
    real-time streams and the first frame alone (generated frames/s throughout)."""
    candidates = single + [r for r in rounds if r.mode == SCHEDULER and r.streams == 1]
    best = max(candidates, key=lambda r: r.generated_frames_per_s, default=None)
    best_fps = best.generated_frames_per_s if best else 0.0
    k4 = _find(rounds, SCHEDULER, 4)
    k4_base = _find(rounds, BASELINE, 4)
    k1 = _find(rounds, SCHEDULER, 1)
    return {
        "best_single_frames_per_s": best_fps,
        "best_single_batch": best.batch_size if best else None,
        "k4_scheduler_frames_per_s": k4["generated_frames_per_s"] if k4 else None,
        "k4_baseline_frames_per_s": k4_base["generated_frames_per_s"] if k4_base else None,
        "k4_over_best_single": _ratio(k4, best_fps),
        "k4_scheduler_over_baseline": _ratio(
            k4, k4_base["generated_frames_per_s"] if k4_base else 0
        ),
        "realtime_streams_scheduler": _most_kept(rounds, SCHEDULER),
        "realtime_streams_baseline": _most_kept(rounds, BASELINE),
        "first_frame_alone_s": k1["first_frame_median_s"] if k1 else None,
        "first_frame_alone_best_s": min((r.first_frame_median_s for r in candidates), default=None),
        "targets": TARGETS,
    }


def _most_kept(rounds: list[RoundResult], mode: str) -> int:
    """The most streams that kept real time together in one round."""
    return max((r.kept_up for r in rounds if r.mode == mode), default=0)


def _ratio(row: dict[str, Any] | None, denominator: float) -> float | None:
    if row is None or denominator <= 0:
        return None
    return round(row["generated_frames_per_s"] / denominator, 3)


def markdown(summary: dict[str, Any]) -> str:
    env = summary["environment"]
    avatar = summary["avatar"]
    where = env.get("gpu", env["device"])
    weights = (
        "RANDOM WEIGHTS: real cost, the video is noise."
        if env["random_weights"]
        else "Real weights."
    )
    lines = [
        f"# Concurrent streams: {env['profile']} on {where} ({env['dtype']})",
        "",
        f"**{weights}** Host `{env['host']}` ({env['cpu_count']} CPUs, {env['machine']}), "
        f"torch {env['torch']} ({env['torch_threads']} threads); load average "
        f"{env['loadavg_start'][0]:.2f} at start, {env['loadavg_now'][0]:.2f} at the end. "
        f"Avatar {avatar['width']}x{avatar['height']}, {avatar['frames']} frames; scheduler "
        f"max batch {summary['max_batch']}, {summary['batch_size']} frames per batch per "
        f"stream; model speed-ups: {env.get('accel', 'baseline')}"
        + (f" (warmed in {env['accel_warm_s']} s)" if "accel_warm_s" in env else "")
        + f"; calibration {summary['calibration'] or 'skipped'} frames/s by batch; late "
        + (
            "streams degrade (repeated frames). "
            if env.get("degrade", True)
            else "streams never degrade (every frame generated). "
        )
        + f"{summary['note']}",
        "",
        "Single stream, scheduler (the best of these is the best single-stream throughput):",
        "",
        "| batch | audio s | generated frames/s | first frame s | first chunk s | kept up | "
        "load before / after |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["single"]:
        lines.append(
            f"| {r['batch_size']} | {r['audio_seconds']:g} | {r['generated_frames_per_s']:.2f} | "
            f"{r['first_frame_median_s']:.3f} | {r['first_chunk_median_s']:.2f} | "
            f"{r['kept_up']}/1 | {r['loadavg_before']:.1f} / {r['loadavg_after']:.1f} |"
        )
    lines += [
        "",
        "K concurrent streams, scheduler and baseline interleaved:",
        "",
        *_rounds_table(summary),
    ]
    lines += ["", *_ratio_lines(summary["ratios"]), "", *_legend()]
    return "\n".join(lines) + "\n"


def _rounds_table(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| K | mode | audio s | generated frames/s (with repeats) | frames / CPU s | first frame "
        "median / max s | first chunk median / max s | complete max s | real-time factor | "
        "kept real time | worst lateness s | repeated frames | most waiting | peak GPU MiB | "
        "load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rounds"]:
        generated = r["generated_frames_per_s"]
        per_cpu = generated * r["wall_s"] / r["cpu_s"] if r["cpu_s"] > 0 else 0.0
        lines.append(
            f"| {r['streams']} | {r['mode']} | {r['audio_seconds']:g} | {generated:.2f} "
            f"({r['frames_per_s']:.2f}) | {per_cpu:.2f} | "
            f"{r['first_frame_median_s']:.3f} / {r['first_frame_max_s']:.3f} | "
            f"{r['first_chunk_median_s']:.2f} / {r['first_chunk_max_s']:.2f} | "
            f"{r['complete_max_s']:.2f} | {r['realtime_factor']:.2f} | "
            f"{r['kept_up']}/{r['streams']} | {r['worst_lateness_s']:.2f} | "
            f"{r['repeated_frames']} | {r['max_waiting_streams']} | "
            f"{r['peak_cuda_bytes'] / 2**20:.0f} | "
            f"{r['loadavg_before']:.1f} / {r['loadavg_after']:.1f} |"
            + (f" errors: {r['errors']}" if r["errors"] else "")
        )
    return lines


def _fmt(value: float | None, unit: str = "x") -> str:
    return "n/a" if value is None else f"**{value:.3f}{unit}**"


def _ratio_lines(ratios: dict[str, Any]) -> list[str]:
    targets = ratios["targets"]
    return [
        f"- best single-stream throughput (scheduler, K=1): "
        f"{ratios['best_single_frames_per_s']:.2f} frames/s at batch {ratios['best_single_batch']}",
        f"- aggregate at K=4 / best single: {_fmt(ratios['k4_over_best_single'])} "
        f"(CPU target {targets['cpu_k4_over_best_single']})",
        f"- aggregate at K=4, scheduler / baseline: {_fmt(ratios['k4_scheduler_over_baseline'])} "
        f"(CPU target {targets['cpu_k4_scheduler_over_baseline']})",
        f"- most streams that kept real time together: scheduler "
        f"**{ratios['realtime_streams_scheduler']}**, baseline "
        f"{ratios['realtime_streams_baseline']} (GPU target {targets['cuda_realtime_streams']})",
        f"- first frame alone (K=1, scheduler): {_fmt(ratios['first_frame_alone_s'], ' s')}, best "
        f"over the single-stream batch sizes {_fmt(ratios['first_frame_alone_best_s'], ' s')} "
        f"(GPU target {targets['cuda_first_frame_alone_s']} s)",
    ]


def _legend() -> list[str]:
    return [
        "Times are seconds from the moment the K streams were opened together. Generated "
        "frames/s: frames the model made for all K streams / wall seconds of the round (repeated "
        "frames, placed by the scheduler when a live stream runs late, are left out; with them in "
        "brackets). Frames / CPU s: the same frames over this process's CPU seconds (less "
        "sensitive to other processes). A stream keeps real time when chunk i is ready by "
        "first-chunk time + i x chunk seconds. Real-time factor: audio seconds / seconds until "
        "the slowest stream's last chunk. Most waiting: the most live streams the scheduler held "
        "back at once for lack of capacity (admission). Baseline: one thread per stream running "
        "its own batches, blending and encoding (the design before the scheduler).",
    ]


def main(argv: list[str] | None = None) -> int:
    run(_parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
