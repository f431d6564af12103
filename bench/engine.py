"""Engine benchmark: per-stage cost, end-to-end frames/s, a naive baseline and the pure model.

Not a test. Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.engine                     # CPU, fp32, batches 1,4,8
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.engine --device cuda \\
        --batches 1,4,8,16,32,64                                            # CUDA, fp16

The default profile is ``random-full``: the real MuseTalk v1.5 architecture with RANDOM weights.
The output is noise, but every tensor has its real size, so the cost is the real cost. Results go
to ``bench/results/engine-<device>.json`` and ``.md`` (see bench/README.md for each number).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.audio import SAMPLE_RATE, load_audio
from inference.avatar_store import AvatarManifest, PreparedAvatar
from inference.blending import blend_face
from inference.config import (
    PROFILE_RANDOM_FULL,
    PROFILES,
    EngineConfig,
    GenerateConfig,
    PrepareConfig,
)
from inference.media import Mp4Writer
from inference.models import predict_latents
from inference.pipeline import Engine
from inference.vae import decode_latents
from tests.media import SHARED_MEDIA

DEFAULT_VIDEO = SHARED_MEDIA / "sun.mp4"  # 576x768, a real face (MuseTalk demo clip)
DEFAULT_AUDIO = SHARED_MEDIA / "eng.wav"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class BatchResult:
    """Everything measured at one batch size; times are wall-clock seconds."""

    batch_size: int
    frames: int
    unet_ms_per_frame: float = 0.0
    vae_decode_ms_per_frame: float = 0.0
    model_s: float = 0.0  # UNet + VAE decode alone, batched, no blend/encode
    model_cpu_s: float = 0.0  # CPU seconds (all threads of this process) for the same runs:
    engine_cpu_s: float = 0.0  # less sensitive than wall time to other processes' load
    peak_cuda_bytes: int = 0  # torch.cuda.max_memory_allocated during the pure model run
    engine_s: float = 0.0  # Engine.generate_file, all included
    engine_timings: dict[str, float] = field(default_factory=dict)

    @property
    def engine_fps(self) -> float:
        return self.frames / self.engine_s

    @property
    def model_fps(self) -> float:
        return self.frames / self.model_s

    @property
    def engine_over_model(self) -> float:
        return self.engine_s / self.model_s


# -- helpers ------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _samples_for(frames: int, speech: np.ndarray, fps: int) -> np.ndarray:
    """Audio that makes exactly ``frames`` video frames: T = floor(n / 16000 * fps).

    A quarter frame of slack keeps float rounding from dropping the last frame.
    """
    n = frames * SAMPLE_RATE // fps + SAMPLE_RATE // fps // 4
    if n > len(speech):
        speech = np.tile(speech, math.ceil(n / len(speech)))
    return np.ascontiguousarray(speech[:n])


def _frames_for(batch: int, device: str, fixed: int) -> int:
    """Frames per configuration: short on CPU (the full model is ~8 s/frame there)."""
    if fixed:
        return fixed
    if device == "cpu":
        return 4 if batch == 1 else max(8, batch)
    return max(128, 4 * batch)


def _media(args: argparse.Namespace, scratch: Path) -> tuple[Path, Path]:
    """The video and audio to use; synthesized (tests/media.py) where the files are absent."""
    video, audio = args.video, args.audio
    if not video.is_file():
        from tests.media import make_face_video  # needs scikit-image (requirements-dev.txt)

        _log(f"{video} not found: using a synthesized 576x768 astronaut clip")
        video = make_face_video(scratch / "face.mp4", seconds=1.0, size=(576, 768))
    if not audio.is_file():
        from tests.media import make_speech_wav

        _log(f"{audio} not found: using synthesized speech")
        audio = make_speech_wav(scratch / "speech.wav", seconds=10.0)
    return video, audio


def prepared_avatar(
    engine: Engine, args: argparse.Namespace, video: Path, scratch: Path
) -> tuple[Path, AvatarManifest]:
    """``--avatar-dir`` when given (an avatar prepared elsewhere, e.g. on a machine whose
    OpenCV lacks face detection), else the first ``--avatar-frames`` frames of the video."""
    if args.avatar_dir:
        return args.avatar_dir, engine.avatar(args.avatar_dir).manifest
    avatar_dir = scratch / "avatar"
    prep = PrepareConfig(max_frames=args.avatar_frames, batch_size=8, idle_video=False)
    return avatar_dir, engine.prepare(video, avatar_dir, config=prep)


def _load(engine: Engine, cfg: GenerateConfig, samples: np.ndarray) -> tuple[torch.Tensor, int]:
    features = engine.audio_features(samples, config=cfg)
    return features.chunks, features.frame_count


# -- measurements -------------------------------------------------------------------------------


def measure_audio(engine: Engine, speech: np.ndarray, seconds: float) -> float:
    """ms of whisper feature extraction per second of audio (one 30 s window at most)."""
    samples = _samples_for(int(seconds * 25), speech, 25)
    cfg = GenerateConfig()
    _sync(engine.models.device)
    started = time.perf_counter()
    engine.audio_features(samples, config=cfg)
    _sync(engine.models.device)
    return 1000 * (time.perf_counter() - started) / (len(samples) / SAMPLE_RATE)


def measure_model(
    engine: Engine, avatar: PreparedAvatar, chunks: torch.Tensor, batch: int
) -> tuple[float, float, np.ndarray]:
    """Pure model at ``batch``: (UNet s, VAE decode s, faces (T, 256, 256, 3))."""
    device = engine.models.device
    unet_s = vae_s = 0.0
    faces = []
    for start in range(0, chunks.shape[0], batch):
        indices = list(range(start, min(start + batch, chunks.shape[0])))
        latents = avatar.latents[[avatar.frame_index(i) for i in indices]]
        _sync(device)
        t0 = time.perf_counter()
        predicted = predict_latents(engine.models, latents, chunks[indices[0] : indices[-1] + 1])
        _sync(device)
        t1 = time.perf_counter()
        faces.append(decode_latents(engine.models.vae, predicted))
        t2 = time.perf_counter()
        unet_s += t1 - t0
        vae_s += t2 - t1
    return unet_s, vae_s, np.concatenate(faces)


def measure_blend(avatar: PreparedAvatar, faces: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """ms per frame of paste-back, and the blended frames."""
    started = time.perf_counter()
    frames = []
    for i, face in enumerate(faces):
        j = avatar.frame_index(i)
        frames.append(
            blend_face(
                avatar.frames[j], face, avatar.face_boxes[j], avatar.masks[j], avatar.mask_boxes[j]
            )
        )
    return 1000 * (time.perf_counter() - started) / len(faces), frames


def measure_encode(frames: list[np.ndarray], samples: np.ndarray, out: Path, fps: int) -> float:
    """ms per frame of H.264 + AAC encoding (Mp4Writer, as the engine uses it)."""
    height, width = frames[0].shape[:2]
    started = time.perf_counter()
    with Mp4Writer(out, fps=fps, width=width, height=height, audio=samples) as writer:
        for frame in frames:
            writer.write(frame)
    return 1000 * (time.perf_counter() - started) / len(frames)


def measure_naive(
    engine: Engine, avatar_dir: Path, samples: np.ndarray, out: Path, fps: int
) -> float:
    """Upstream real-time style: audio features, then per frame UNet + decode, blend, encode.

    One frame at a time, nothing overlapped; returns the wall-clock seconds of the whole run.
    """
    started = time.perf_counter()
    cfg = GenerateConfig(batch_size=1, fps=fps)
    avatar = engine.avatar(avatar_dir)
    chunks, total = _load(engine, cfg, samples)
    height, width = avatar.frames[0].shape[:2]
    with Mp4Writer(out, fps=fps, width=width, height=height, audio=samples) as writer:
        for i in range(total):
            j = avatar.frame_index(i)
            predicted = predict_latents(engine.models, avatar.latents[j : j + 1], chunks[i : i + 1])
            face = decode_latents(engine.models.vae, predicted)[0]
            frame = blend_face(
                avatar.frames[j], face, avatar.face_boxes[j], avatar.masks[j], avatar.mask_boxes[j]
            )
            writer.write(frame)
    return time.perf_counter() - started


def measure_engine(
    engine: Engine, avatar_dir: Path, samples: np.ndarray, out: Path, cfg: GenerateConfig
) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    result = engine.generate_file(avatar_dir, samples, out, config=cfg)
    return time.perf_counter() - started, result.timings


# -- the run ------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__)
    parser.add_argument("--profile", default=PROFILE_RANDOM_FULL, choices=PROFILES)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,4,8", help="comma-separated batch sizes")
    parser.add_argument("--frames", type=int, default=0, help="frames per config (0: auto)")
    parser.add_argument("--avatar-frames", type=int, default=8)
    parser.add_argument("--avatar-dir", type=Path, default=None, help="a prepared avatar")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--note", default="", help="free text stored with the results")
    return parser.parse_args(argv)


def _log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def _environment(engine: Engine, args: argparse.Namespace) -> dict[str, Any]:
    env: dict[str, Any] = {
        "profile": args.profile,
        "random_weights": engine.models.is_random,
        "device": str(engine.models.device),
        "dtype": str(engine.models.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "loadavg_start": list(os.getloadavg()),
    }
    if engine.models.device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(engine.models.device)
    return env


def _bench_batch(
    engine: Engine,
    avatar_dir: Path,
    speech: np.ndarray,
    batch: int,
    frames: int,
    args: argparse.Namespace,
    scratch: Path,
) -> tuple[BatchResult, np.ndarray, np.ndarray]:
    avatar = engine.avatar(avatar_dir)
    cfg = GenerateConfig(batch_size=batch, fps=args.fps)
    samples = _samples_for(frames, speech, args.fps)
    chunks, total = _load(engine, cfg, samples)
    result = BatchResult(batch_size=batch, frames=total)
    device = engine.models.device
    if device.type == "cuda":
        # Untimed first batch: kernel selection and allocator growth happen once per shape.
        measure_model(engine, avatar, chunks[:batch], batch)
        torch.cuda.reset_peak_memory_stats(device)
    cpu = time.process_time()
    unet_s, vae_s, faces = measure_model(engine, avatar, chunks, batch)
    result.model_cpu_s = time.process_time() - cpu
    if device.type == "cuda":
        result.peak_cuda_bytes = torch.cuda.max_memory_allocated(device)
    result.unet_ms_per_frame = 1000 * unet_s / total
    result.vae_decode_ms_per_frame = 1000 * vae_s / total
    result.model_s = unet_s + vae_s
    _log(f"batch {batch}: pure model {result.model_s:.2f} s for {total} frames")
    cpu = time.process_time()
    result.engine_s, result.engine_timings = measure_engine(
        engine, avatar_dir, samples, scratch / f"engine-{batch}.mp4", cfg
    )
    result.engine_cpu_s = time.process_time() - cpu
    _log(f"batch {batch}: engine {result.engine_s:.2f} s ({result.engine_fps:.3f} frames/s)")
    return result, faces, samples


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    _log(f"loading {args.profile} on {args.device} (random weights: cost is real, output is not)")
    started = time.perf_counter()
    config = EngineConfig(profile=args.profile, models_dir=args.models_dir, device=args.device)
    engine = Engine.from_config(config)
    load_s = time.perf_counter() - started
    env = _environment(engine, args)
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        scratch = Path(tmp)
        video, audio = _media(args, scratch)
        speech = load_audio(audio)
        started = time.perf_counter()
        avatar_dir, manifest = prepared_avatar(engine, args, video, scratch)
        prepare_s = time.perf_counter() - started
        _log(f"avatar of {manifest.frame_count} frames ready in {prepare_s:.1f} s")
        avatar = engine.avatar(avatar_dir)
        # Warm-up: first calls allocate and pick kernels; keep that out of every number.
        warm_chunks, _ = _load(engine, GenerateConfig(), _samples_for(1, speech, args.fps))
        measure_model(engine, avatar, warm_chunks[:1], 1)
        audio_ms = measure_audio(engine, speech, seconds=4.0)
        results = []
        for batch in batches:
            frames = _frames_for(batch, args.device, args.frames)
            result, faces, samples = _bench_batch(
                engine, avatar_dir, speech, batch, frames, args, scratch
            )
            results.append(result)
        # Blend and encode on the last configuration's decoded faces (no extra model run).
        blend_ms, blended = measure_blend(avatar, faces)
        encode_ms = measure_encode(blended, samples, scratch / "encode.mp4", args.fps)
        # The naive baseline at the first configuration's length.
        base_frames = results[0].frames
        samples = _samples_for(base_frames, speech, args.fps)
        cpu = time.process_time()
        naive_s = measure_naive(engine, avatar_dir, samples, scratch / "naive.mp4", args.fps)
        env["naive_cpu_s"] = time.process_time() - cpu
        _log(f"naive baseline {naive_s:.2f} s for {base_frames} frames")
    env["loadavg_end"] = list(os.getloadavg())
    return _summary(
        env,
        args,
        load_s,
        prepare_s,
        manifest.frame_width,
        manifest.frame_height,
        audio_ms,
        blend_ms,
        encode_ms,
        naive_s,
        base_frames,
        results,
    )


def _summary(
    env: dict[str, Any],
    args: argparse.Namespace,
    load_s: float,
    prepare_s: float,
    width: int,
    height: int,
    audio_ms: float,
    blend_ms: float,
    encode_ms: float,
    naive_s: float,
    naive_frames: int,
    results: list[BatchResult],
) -> dict[str, Any]:
    best = max(results, key=lambda r: r.engine_fps)
    naive_fps = naive_frames / naive_s
    return {
        "note": args.note,
        "environment": env,
        "frame_size": [width, height],
        "avatar_frames": args.avatar_frames,
        "load_s": load_s,
        "prepare_s": prepare_s,
        "stages": {
            "audio_features_ms_per_audio_s": audio_ms,
            "blend_ms_per_frame": blend_ms,
            "encode_ms_per_frame": encode_ms,
        },
        "naive": {
            "frames": naive_frames,
            "seconds": naive_s,
            "fps": naive_fps,
            "cpu_s": env.pop("naive_cpu_s"),
        },
        "batches": [
            {
                **asdict(r),
                "engine_fps": r.engine_fps,
                "model_fps": r.model_fps,
                "engine_over_model": r.engine_over_model,
            }
            for r in results
        ],
        "ratios": {
            "best_batch": best.batch_size,
            "engine_vs_naive_speedup": best.engine_fps / naive_fps,
            "engine_over_model_at_best": best.engine_over_model,
            "targets": {
                "engine_vs_naive_speedup": ">= 1.10",
                "engine_over_model_at_best": "<= 1.10",
            },
        },
    }


def markdown(summary: dict[str, Any]) -> str:
    env = summary["environment"]
    stages = summary["stages"]
    lines = [
        f"# Engine benchmark: {env['device']} ({env['dtype']})",
        "",
        f"Profile `{env['profile']}` — **random weights**: the output is noise, the cost is real.",
        f"torch {env['torch']}, {env['torch_threads']} torch threads, {env['cpu_count']} CPUs, "
        f"load average {env['loadavg_start'][0]:.1f} at start, {env['loadavg_end'][0]:.1f} at end"
        + (f", GPU {env['gpu']}" if "gpu" in env else "")
        + ".",
        f"Frame {summary['frame_size'][0]}x{summary['frame_size'][1]}, avatar of "
        f"{summary['avatar_frames']} frames (prepared in {summary['prepare_s']:.1f} s; models "
        f"loaded in {summary['load_s']:.1f} s).",
        "",
        "| batch | frames | UNet ms/frame | VAE decode ms/frame | model s | engine s | "
        "engine frames/s | engine / model | CPU s model / engine |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["batches"]:
        lines.append(
            f"| {r['batch_size']} | {r['frames']} | {r['unet_ms_per_frame']:.1f} | "
            f"{r['vae_decode_ms_per_frame']:.1f} | {r['model_s']:.2f} | {r['engine_s']:.2f} | "
            f"{r['engine_fps']:.3f} | {r['engine_over_model']:.3f} | "
            f"{r['model_cpu_s']:.1f} / {r['engine_cpu_s']:.1f} |"
        )
    naive = summary["naive"]
    ratios = summary["ratios"]
    peaks = [
        f"batch {r['batch_size']}: {r['peak_cuda_bytes'] / 2**20:.0f} MiB"
        for r in summary["batches"]
        if r["peak_cuda_bytes"]
    ]
    if peaks:
        lines += ["", "Peak CUDA memory during the pure model run: " + ", ".join(peaks) + "."]
    lines += [
        "",
        f"- audio features: {stages['audio_features_ms_per_audio_s']:.1f} ms per second of audio",
        f"- blend (paste-back): {stages['blend_ms_per_frame']:.2f} ms/frame",
        f"- encode (H.264 + AAC): {stages['encode_ms_per_frame']:.2f} ms/frame",
        f"- naive baseline (batch 1, sequential): {naive['frames']} frames in "
        f"{naive['seconds']:.2f} s = {naive['fps']:.3f} frames/s ({naive['cpu_s']:.1f} CPU s)",
        f"- engine vs naive at the best batch ({ratios['best_batch']}): "
        f"**{ratios['engine_vs_naive_speedup']:.3f}x** (target >= 1.10)",
        f"- engine time / pure model time at the best batch: "
        f"**{ratios['engine_over_model_at_best']:.3f}** (target <= 1.10)",
    ]
    if summary["note"]:
        lines += ["", summary["note"]]
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, name: str, summary: dict[str, Any], table: str) -> None:
    """``<out_dir>/<name>-<device>.json`` and ``.md``; the table also goes to stdout."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{name}-{summary['environment']['device'].split(':')[0]}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table)
    sys.stdout.write(table)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    summary = run(args)
    write_results(args.out_dir, "engine", summary, markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
