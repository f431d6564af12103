"""Encoding parallelism: can several streams' live chunks be encoded at once in threads?

Not a test. Run from the repository root::

    .venv/bin/python -m bench.encode                     # workers 1, 2 and os.cpu_count()
    .venv/bin/python -m bench.encode --workers 1,2,4,8 --chunks 4

Each worker encodes ``--chunks`` one-second chunks of ``--fps`` frames (576x768 BGR, the first
frames of the demo clip ``sun.mp4``, decoded once; synthesized moving frames when it is absent)
with the live path's writer: ``Mp4Writer(tune="zerolatency", preset="veryfast", gop=2*fps)``,
video only. Variants:

- ``thread``: W Python threads, each with its own Mp4Writer, x264 threading left to PyAV's
  default (``thread_count=0`` = auto, ``thread_type=SLICE``), or ``x264-t1`` (one x264 thread),
  or ``frame`` (auto count, frame threading);
- ``process``: a ``ProcessPoolExecutor(W)`` (warmed before timing), one task per chunk; the
  25 frames (33 MB) are pickled to the worker, as the live path would have to.

Every figure is wall-clock aggregate frames/s and CPU ms per frame (this process, all its
threads, plus the pool workers' own CPU time). A separate single-thread run splits one frame's
cost into BGR->yuv420p conversion (``VideoFrame.from_ndarray`` + ``reformat``) and the rest.
Results: ``bench/results/encode-<device>.json`` and ``.md`` (device is always ``cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from inference.media import Mp4Writer, read_video
from tests.media import SHARED_MEDIA

DEFAULT_VIDEO = SHARED_MEDIA / "sun.mp4"
RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("thread", "thread-x264-t1", "thread-frame", "process", "process-x264-t1")


@dataclass
class EncodeResult:
    variant: str
    workers: int
    frames: int
    wall_s: float
    cpu_s: float

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1000 * self.cpu_s / self.frames


def load_frames(video: Path, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``count`` BGR frames of ``size`` (width, height): the clip's first frames, or synthetic."""
    if video.is_file():
        frames = read_video(video, max_frames=count).frames
        if frames and frames[0].shape[:2] == (size[1], size[0]):
            return [np.ascontiguousarray(f) for f in frames]
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 24, size=(height, width, 3), dtype=np.uint8)
    frames = []
    for i in range(count):  # a moving gradient with mild noise: compressible, not trivial
        base = ((x + 4 * i) % 256)[..., None] * np.array([1, 0.5, 0.25]) + (y % 64)[..., None]
        frames.append(np.ascontiguousarray((base % 232).astype(np.uint8) + noise))
    return frames


def encode_chunk(
    frames: list[np.ndarray], out: Path, fps: int, x264_threads: int, thread_type: str
) -> float:
    """One live chunk through Mp4Writer; returns this call's CPU seconds (whole process)."""
    cpu = time.process_time()
    height, width = frames[0].shape[:2]
    with Mp4Writer(
        out, fps=fps, width=width, height=height, tune="zerolatency", preset="veryfast", gop=2 * fps
    ) as writer:
        # The codec opens on the first frame, so its threading can still be set here. The
        # writer has no option for it; the live path keeps PyAV's defaults (0 = auto, SLICE).
        context = writer._video.codec_context
        context.thread_count = x264_threads
        context.thread_type = thread_type
        for frame in frames:
            writer.write(frame)
    return time.process_time() - cpu


def _options(variant: str) -> tuple[int, str]:
    """(x264 thread_count, thread_type) of a variant."""
    if variant.endswith("x264-t1"):
        return 1, "SLICE"
    if variant.endswith("frame"):
        return 0, "FRAME"
    return 0, "SLICE"


def run_threads(
    variant: str, workers: int, frames: list[np.ndarray], chunks: int, fps: int, scratch: Path
) -> EncodeResult:
    threads_count, thread_type = _options(variant)

    def work(index: int) -> None:
        for chunk in range(chunks):
            out = scratch / f"t{index}-{chunk}.mp4"
            encode_chunk(frames, out, fps, threads_count, thread_type)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    cpu, started = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return EncodeResult(variant, workers, workers * chunks * len(frames), wall, cpu)


def _warm(_: int) -> int:
    time.sleep(0.2)  # long enough that each warm-up task lands on its own worker
    return os.getpid()


def run_pool(
    variant: str, workers: int, frames: list[np.ndarray], chunks: int, fps: int, scratch: Path
) -> EncodeResult:
    threads_count, thread_type = _options(variant)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_warm, range(workers)))
        cpu, started = time.process_time(), time.perf_counter()
        futures = [
            pool.submit(
                encode_chunk, frames, scratch / f"p{i}.mp4", fps, threads_count, thread_type
            )
            for i in range(workers * chunks)
        ]
        worker_cpu = sum(future.result() for future in futures)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return EncodeResult(variant, workers, workers * chunks * len(frames), wall, cpu + worker_cpu)


def measure_conversion(frames: list[np.ndarray], fps: int, scratch: Path) -> dict[str, float]:
    """Single thread, x264 threads=1: ms per frame of conversion alone and of a whole write."""
    repeats = 3
    started = time.perf_counter()
    for _ in range(repeats):
        for frame in frames:
            av.VideoFrame.from_ndarray(frame, format="bgr24")
    # from_ndarray copies the array (ndarray.tobytes, then into the frame) holding the GIL;
    # reformat (sws_scale) and the encoder release it.
    from_ndarray = 1000 * (time.perf_counter() - started) / (repeats * len(frames))
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        for frame in frames:
            av.VideoFrame.from_ndarray(frame, format="bgr24").reformat(format="yuv420p")
    count = repeats * len(frames)
    convert_wall = 1000 * (time.perf_counter() - started) / count
    convert_cpu = 1000 * (time.process_time() - cpu) / count
    started = time.perf_counter()
    encode_cpu = sum(
        encode_chunk(frames, scratch / f"c{i}.mp4", fps, 1, "SLICE") for i in range(repeats)
    )
    write_wall = 1000 * (time.perf_counter() - started) / count
    return {
        "from_ndarray_ms_per_frame": from_ndarray,
        "convert_ms_per_frame": convert_wall,
        "convert_cpu_ms_per_frame": convert_cpu,
        "write_ms_per_frame": write_wall,
        "write_cpu_ms_per_frame": 1000 * encode_cpu / count,
        "convert_share_of_write": convert_wall / write_wall,
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(prog="python -m bench.encode", description=__doc__)
    parser.add_argument("--workers", default=f"1,2,{cores}", help="comma-separated W")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--chunks", type=int, default=4, help="chunks per worker")
    parser.add_argument("--fps", type=int, default=25, help="frames per 1-s chunk")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--size", default="576x768", help="WxH when synthesizing frames")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--note", default="")
    return parser.parse_args(argv)


def _log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> dict[str, Any]:
    width, height = (int(v) for v in args.size.split("x"))
    frames = load_frames(args.video, args.fps, (width, height))
    workers = sorted({int(w) for w in args.workers.split(",")})
    env = {
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "pyav": av.__version__,
        "ffmpeg": av.library_versions.get("libavcodec"),
        "loadavg_start": list(os.getloadavg()),
        "frame": [frames[0].shape[1], frames[0].shape[0]],
        "source": str(args.video) if args.video.is_file() else "synthesized",
    }
    results: list[EncodeResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as tmp:
        scratch = Path(tmp)
        encode_chunk(frames[:2], scratch / "warm.mp4", args.fps, 0, "SLICE")
        conversion = measure_conversion(frames, args.fps, scratch)
        for variant in args.variants.split(","):
            runner = run_pool if variant.startswith("process") else run_threads
            for w in workers:
                result = runner(variant, w, frames, args.chunks, args.fps, scratch)
                _log(f"{variant} W={w}: {result.fps:.1f} frames/s")
                results.append(result)
    env["loadavg_end"] = list(os.getloadavg())
    rows = [{**asdict(r), "fps": r.fps, "cpu_ms_per_frame": r.cpu_ms_per_frame} for r in results]
    return {"note": args.note, "environment": env, "conversion": conversion, "runs": rows}


def markdown(summary: dict[str, Any]) -> str:
    env, conv = summary["environment"], summary["conversion"]
    lines = [
        "# Encoding parallelism (live chunks: libx264 veryfast, zerolatency, CPU)",
        "",
        f"{env['cpu_count']} CPUs, PyAV {env['pyav']}, frames {env['frame'][0]}x{env['frame'][1]}"
        f" from {env['source']}; load average {env['loadavg_start'][0]:.1f} at start, "
        f"{env['loadavg_end'][0]:.1f} at end.",
        "",
        "| variant | workers | frames | wall s | frames/s | CPU ms/frame |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["runs"]:
        lines.append(
            f"| {r['variant']} | {r['workers']} | {r['frames']} | {r['wall_s']:.2f} | "
            f"{r['fps']:.1f} | {r['cpu_ms_per_frame']:.1f} |"
        )
    lines += [
        "",
        f"- BGR->yuv420p (from_ndarray + reformat): {conv['convert_ms_per_frame']:.2f} ms/frame "
        f"({conv['convert_cpu_ms_per_frame']:.2f} CPU ms) of a whole Mp4Writer.write at x264 "
        f"threads=1: {conv['write_ms_per_frame']:.2f} ms ({conv['write_cpu_ms_per_frame']:.2f} "
        f"CPU ms), a **{100 * conv['convert_share_of_write']:.0f}%** share; "
        f"from_ndarray alone (a copy that holds the GIL): "
        f"{conv['from_ndarray_ms_per_frame']:.2f} ms/frame.",
    ]
    if summary["note"]:
        lines += ["", summary["note"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    summary = run(args)
    table = markdown(summary)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / "encode-cpu"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
