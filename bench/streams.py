"""Concurrent live streams on one engine: how many real-time sessions one device sustains.

Not a test. Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.streams --device cuda --streams 1,2,4,8,16
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.streams --profile random-tiny --streams 1,2  # smoke

The stream worker runs one ``Engine.generate_chunks`` per active utterance, each in its own
thread, all sharing the resident models (``WORKER_THREADS`` of them per worker process). This
benchmark does exactly that with K utterances started at the same moment, for each K and each
chunk length, and records when every chunk file is ready.

A stream *keeps up* when every chunk is ready before a player that started on the first chunk
needs it: chunk i (0-based) by ``first_chunk_s + i * chunk_seconds``. The default profile is
``random-full``: the real MuseTalk v1.5 architecture with RANDOM weights (real cost, noise
output). Results go to ``bench/results/streams-<profile>-<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
from inference.audio import SAMPLE_RATE, load_audio
from inference.config import (
    PROFILE_RANDOM_FULL,
    PROFILES,
    EngineConfig,
    GenerateConfig,
)
from inference.pipeline import Engine


@dataclass
class StreamResult:
    """One utterance: seconds from the common start until each chunk file was ready."""

    chunk_ready_s: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def first_chunk_s(self) -> float:
        return self.chunk_ready_s[0]

    @property
    def complete_s(self) -> float:
        return self.chunk_ready_s[-1]

    def worst_lateness_s(self, chunk_seconds: float) -> float:
        """How late the latest chunk was for a player that started on the first one (<= 0:
        never late)."""
        first = self.first_chunk_s
        return max(t - (first + i * chunk_seconds) for i, t in enumerate(self.chunk_ready_s))


@dataclass
class RoundResult:
    streams: int
    chunk_seconds: float
    audio_seconds: float
    frames_per_stream: int
    wall_s: float
    first_chunk_median_s: float
    first_chunk_max_s: float
    complete_max_s: float
    frames_per_s: float  # all streams together
    realtime_factor: float  # audio seconds produced per wall second, per stream (slowest)
    kept_up: int  # streams with no late chunk
    worst_lateness_s: float
    peak_cuda_bytes: int = 0
    errors: list[str] = field(default_factory=list)


def _run_stream(
    engine: Engine,
    avatar_dir: Path,
    samples: np.ndarray,
    out_dir: Path,
    config: GenerateConfig,
    start: threading.Event,
    t0: list[float],
    result: StreamResult,
) -> None:
    start.wait()
    try:
        for _chunk in engine.generate_chunks(avatar_dir, samples, out_dir, config=config):
            result.chunk_ready_s.append(time.perf_counter() - t0[0])
    except Exception as exc:  # reported in the results, never hidden
        result.error = f"{type(exc).__name__}: {exc}"


def run_round(
    engine: Engine,
    avatar_dir: Path,
    samples: np.ndarray,
    *,
    streams: int,
    chunk_seconds: float,
    batch_size: int,
    scratch: Path,
) -> RoundResult:
    """K utterances started together, each in its own thread, as the stream worker runs them."""
    config = GenerateConfig(batch_size=batch_size, chunk_seconds=chunk_seconds)
    device = engine.models.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start, t0 = threading.Event(), [0.0]
    results = [StreamResult() for _ in range(streams)]
    threads = [
        threading.Thread(
            target=_run_stream,
            args=(engine, avatar_dir, samples, scratch / f"s{k}", config, start, t0, results[k]),
            name=f"stream-{k}",
        )
        for k in range(streams)
    ]
    for thread in threads:
        thread.start()
    t0[0] = time.perf_counter()
    start.set()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0[0]
    audio_seconds = len(samples) / SAMPLE_RATE
    frames = int(audio_seconds * config.fps)
    ok = [r for r in results if not r.error and r.chunk_ready_s]
    lateness = [r.worst_lateness_s(chunk_seconds) for r in ok]
    return RoundResult(
        streams=streams,
        chunk_seconds=chunk_seconds,
        audio_seconds=round(audio_seconds, 3),
        frames_per_stream=frames,
        wall_s=round(wall, 3),
        first_chunk_median_s=round(statistics.median(r.first_chunk_s for r in ok), 3) if ok else 0,
        first_chunk_max_s=round(max((r.first_chunk_s for r in ok), default=0), 3),
        complete_max_s=round(max((r.complete_s for r in ok), default=0), 3),
        frames_per_s=round(frames * len(ok) / wall, 2),
        realtime_factor=round(audio_seconds / max((r.complete_s for r in ok), default=wall), 3),
        kept_up=sum(1 for late in lateness if late <= 0),
        worst_lateness_s=round(max(lateness, default=0.0), 3),
        peak_cuda_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0,
        errors=[r.error for r in results if r.error],
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    parser.add_argument("--profile", default=PROFILE_RANDOM_FULL, choices=PROFILES)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--streams", default="1,2,4", help="comma-separated concurrent streams")
    parser.add_argument("--chunk-seconds", default="1,2", help="comma-separated chunk lengths")
    parser.add_argument("--seconds", type=float, default=6.0, help="audio per utterance")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--avatar-frames", type=int, default=50)
    parser.add_argument("--avatar-dir", type=Path, default=None, help="a prepared avatar")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--budget-seconds", type=float, default=0, help="stop adding rounds after")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--note", default="", help="free text stored with the results")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    _log(f"loading {args.profile} on {args.device} (random weights: cost is real, output is not)")
    engine = Engine.from_config(
        EngineConfig(profile=args.profile, models_dir=args.models_dir, device=args.device)
    )
    env = _environment(engine, args)
    began = time.perf_counter()
    rounds: list[RoundResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        scratch = Path(tmp)
        video, audio = _media(args, scratch)
        speech = load_audio(audio)
        samples = np.ascontiguousarray(np.resize(speech, round(args.seconds * SAMPLE_RATE)))
        avatar_dir, manifest = prepared_avatar(engine, args, video, scratch)
        size = f"{manifest.frame_width}x{manifest.frame_height}"
        _log(f"prepared {manifest.frame_count} frames ({size})")
        # Warm-up: kernel selection and allocator growth, once, outside every number.
        run_round(
            engine,
            avatar_dir,
            samples[:SAMPLE_RATE],
            streams=1,
            chunk_seconds=1.0,
            batch_size=args.batch_size,
            scratch=scratch / "warm",
        )
        for chunk_seconds in [float(c) for c in args.chunk_seconds.split(",")]:
            for streams in [int(k) for k in args.streams.split(",")]:
                if args.budget_seconds and time.perf_counter() - began > args.budget_seconds:
                    _log(f"time budget spent: skipping {streams} streams at {chunk_seconds} s")
                    continue
                result = run_round(
                    engine,
                    avatar_dir,
                    samples,
                    streams=streams,
                    chunk_seconds=chunk_seconds,
                    batch_size=args.batch_size,
                    scratch=scratch / f"r{len(rounds)}",
                )
                rounds.append(result)
                _log(
                    f"{streams} streams x {chunk_seconds:g} s chunks: first chunk "
                    f"{result.first_chunk_median_s:.2f} s (max {result.first_chunk_max_s:.2f}), "
                    f"complete {result.complete_max_s:.2f} s, {result.frames_per_s:.1f} frames/s, "
                    f"kept up {result.kept_up}/{streams}"
                )
    engine.close()
    return {
        "environment": env,
        "note": args.note,
        "batch_size": args.batch_size,
        "avatar": {
            "frames": manifest.frame_count,
            "width": manifest.frame_width,
            "height": manifest.frame_height,
            "video": str(video),
        },
        "rounds": [asdict(r) for r in rounds],
    }


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
        f"**{weights}**"
        f" Avatar {avatar['width']}x{avatar['height']}, {avatar['frames']} frames; batch size "
        f"{summary['batch_size']}; torch {env['torch']}. {summary['note']}",
        "",
        "| streams | chunk s | audio s | first chunk median / max s | complete max s | "
        "frames/s (all) | real-time factor (slowest) | kept up | worst lateness s | peak GPU MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rounds"]:
        lines.append(
            f"| {r['streams']} | {r['chunk_seconds']:g} | {r['audio_seconds']:g} | "
            f"{r['first_chunk_median_s']:.2f} / {r['first_chunk_max_s']:.2f} | "
            f"{r['complete_max_s']:.2f} | {r['frames_per_s']:.1f} | {r['realtime_factor']:.2f} | "
            f"{r['kept_up']}/{r['streams']} | {r['worst_lateness_s']:.2f} | "
            f"{r['peak_cuda_bytes'] / 2**20:.0f} |"
            + (f" errors: {r['errors']}" if r["errors"] else "")
        )
    lines += [
        "",
        "A stream keeps up when each chunk i is ready by first-chunk time + i x chunk seconds "
        "(a player that starts on the first chunk never stalls). Real-time factor: audio "
        "seconds / seconds until the slowest stream's last chunk (>= 1: faster than real time).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    summary = run(args)
    write_results(args.out_dir, f"streams-{args.profile}", summary, markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
