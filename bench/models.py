"""Model speed-ups (``inference.accel``): UNet and VAE-decode ms/frame per option, and how far
each option's outputs are from the plain model's.

Not a test. Run from the repository root::

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.models                # CPU: random-tiny, batch 4
    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.models --device cuda  # random-full fp16, 8..64

Profiles have RANDOM weights (``random-full`` on CUDA: the real architecture, so the real cost;
``random-tiny`` on the CPU by default: it only proves the code runs). The models are loaded
once; each option gets a deep copy, ``apply_accel`` and ``warm`` (all batch sizes: compilation
and graph capture are timed apart as "warm s"), then, per batch size, ``predict_latents`` and
``decode_latents`` on the same seeded inputs as the baseline. "UNet diff" is the max abs
difference of the predicted latents from the baseline's, "faces diff" the max abs difference of
the decoded uint8 faces (the VAE decodes the baseline's latents, so it is the decoder's own
difference). Results: ``bench/results/models-<device>.json`` and ``.md``, rewritten after every
option, so a run cut short by ``--budget-seconds`` or a timeout still leaves its table.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.models.attention_processor import AttnProcessor

from inference.accel import AccelOptions, apply_accel, warm
from inference.config import PROFILE_RANDOM_FULL, PROFILE_RANDOM_TINY, PROFILES, EngineConfig
from inference.models import MuseTalkModels, load_models, predict_latents
from inference.vae import decode_latents

RESULTS = Path(__file__).resolve().parent / "results"
CLASSIC = "classic-attention"  # reference row: diffusers' AttnProcessor (no SDPA)
CUDA_OPTIONS = (  # cheap ones first: a budget or timeout cuts the compile runs at the end
    "baseline",
    "sdpa",
    "channels_last",
    "cudnn_benchmark",
    "channels_last+cudnn_benchmark",
    "cuda_graphs",
    "channels_last+cudnn_benchmark+cuda_graphs",
    CLASSIC,
    "compile_vae=default",
    "compile_vae=default+cuda_graphs",
    "channels_last+cudnn_benchmark+compile_vae=default",
    "compile=default",
    "channels_last+cudnn_benchmark+compile=default",
    "compile=max-autotune-no-cudagraphs",
    "compile=reduce-overhead",
)
CPU_OPTIONS = ("baseline", CLASSIC, "sdpa", "channels_last+cudnn_benchmark+cuda_graphs")
# Outputs must stay within fp16 rounding of the baseline (fp32 on the CPU is far tighter):
# latents within 1% of the largest baseline value (~10 fp16 ulps there), faces within 4 of 255.
LATENT_REL_TOL = 1e-2
FACE_LEVEL_TOL = 4


def parse_options(spec: str) -> AccelOptions:
    """``channels_last+compile=default`` -> AccelOptions; ``baseline`` -> the defaults."""
    values: dict[str, Any] = {}
    for part in spec.split("+"):
        if part in ("baseline", CLASSIC):
            continue
        name, _, value = part.partition("=")
        values[name] = value if name in ("compile", "compile_vae") else True
    return AccelOptions(**values)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed + batch)
    latents = torch.randn(batch, 8, 32, 32, generator=generator)
    return latents, torch.randn(batch, 50, 384, generator=generator)


def _time_unet(models: MuseTalkModels, batch: int, iters: int) -> tuple[float, torch.Tensor]:
    latents, audio = _inputs(batch)
    latents, audio = latents.to(models.device), audio.to(models.device)
    _sync(models.device)
    started = time.perf_counter()
    for _ in range(iters):
        predicted = predict_latents(models, latents, audio)
    _sync(models.device)
    return 1000 * (time.perf_counter() - started) / (iters * batch), predicted.float().cpu()


def _time_vae(
    models: MuseTalkModels, latents: torch.Tensor, iters: int
) -> tuple[float, np.ndarray]:
    latents = latents.to(models.device, models.dtype)
    _sync(models.device)
    started = time.perf_counter()
    for _ in range(iters):
        faces = decode_latents(models.vae, latents)  # ends with a copy to the CPU: synchronous
    return 1000 * (time.perf_counter() - started) / (iters * latents.shape[0]), faces


def measure(
    models: MuseTalkModels,
    batches: list[int],
    frames: int,
    reference: dict[int, tuple[torch.Tensor, np.ndarray]],
) -> list[dict[str, Any]]:
    """Per batch: ms/frame of both stages and the differences from ``reference`` (baseline)."""
    rows = []
    for batch in batches:
        iters = max(2, frames // batch)
        unet_ms, latents = _time_unet(models, batch, iters)
        base_latents, base_faces = reference.get(batch, (latents, np.empty(0)))
        vae_ms, faces = _time_vae(models, base_latents, iters)
        if batch not in reference:
            reference[batch] = (latents, faces)
            base_faces = faces
        scale = max(base_latents.abs().max().item(), 1e-6)
        unet_diff = (latents - base_latents).abs().max().item()
        face_diff = np.abs(faces.astype(np.int16) - base_faces.astype(np.int16))
        rows.append(
            {
                "batch_size": batch,
                "unet_ms_per_frame": unet_ms,
                "vae_decode_ms_per_frame": vae_ms,
                "unet_max_abs_diff": unet_diff,
                "unet_rel_diff": unet_diff / scale,
                "faces_max_abs_diff": int(face_diff.max()),
                "faces_mean_abs_diff": float(face_diff.mean()),
                "within_tolerance": unet_diff / scale <= LATENT_REL_TOL
                and int(face_diff.max()) <= FACE_LEVEL_TOL,
            }
        )
    return rows


def run_option(
    base: MuseTalkModels, spec: str, args: argparse.Namespace, reference: dict[int, Any]
) -> dict[str, Any]:
    options = parse_options(spec)
    models = base if spec == "baseline" else copy.deepcopy(base)
    if spec.startswith(CLASSIC):
        models.unet.set_attn_processor(AttnProcessor())
        models.vae.set_attn_processor(AttnProcessor())
    started = time.perf_counter()
    try:
        apply_accel(models, options)
        warm(models, args.batch_list)
        warm_s = time.perf_counter() - started
        rows = measure(models, args.batch_list, args.frames, reference)
    finally:
        # cudnn.benchmark is process-wide, and compiled code must not leak into the next option
        torch.backends.cudnn.benchmark = False
        torch._dynamo.reset()
        del models
        gc.collect()
        if base.device.type == "cuda":
            torch.cuda.empty_cache()
    return {"option": spec, "options": asdict(options), "warm_s": warm_s, "batches": rows}


def best_option(summary: dict[str, Any], batch: int, *, allow_compile: bool = False) -> str:
    """The fastest option (UNet + VAE decode ms/frame at ``batch``) whose outputs stayed within
    tolerance, in ``MUSETALK_ACCEL`` syntax (``""``: the plain model). ``compile`` (the whole
    UNet and decoder) is left out unless ``allow_compile``: a worker warms every batch size at
    boot, and that compile is too slow for it; ``compile_vae`` compiles twice at most."""
    best_spec, best_ms = "baseline", float("inf")
    for result in summary["results"]:
        spec = result["option"]
        if spec.startswith(CLASSIC) or (result["options"]["compile"] and not allow_compile):
            continue
        for row in result["batches"]:
            if row["batch_size"] != batch or not row["within_tolerance"]:
                continue
            ms = row["unet_ms_per_frame"] + row["vae_decode_ms_per_frame"]
            if ms < best_ms:
                best_spec, best_ms = spec, ms
    return "" if best_spec == "baseline" else best_spec.replace("+", ",")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__)
    parser.add_argument(
        "--best",
        type=Path,
        default=None,
        help="print the fastest option within tolerance in a models-*.json (MUSETALK_ACCEL "
        "syntax) and exit; the batch is --batches' last",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", default="", choices=("", *PROFILES), help="default: see doc")
    parser.add_argument("--batches", default="", help="comma-separated (CUDA 8,16,32,64; CPU 4)")
    parser.add_argument("--options", default="", help="comma-separated option specs")
    parser.add_argument("--frames", type=int, default=0, help="frames timed per batch size")
    parser.add_argument("--budget-seconds", type=float, default=0, help="start no option after")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.profile = args.profile or (PROFILE_RANDOM_FULL if cuda else PROFILE_RANDOM_TINY)
    args.batch_list = [int(b) for b in (args.batches or ("8,16,32,64" if cuda else "4")).split(",")]
    args.option_list = (
        args.options.split(",") if args.options else list(CUDA_OPTIONS if cuda else CPU_OPTIONS)
    )
    args.frames = args.frames or (128 if cuda else 4)
    return args


def _log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def _environment(models: MuseTalkModels, args: argparse.Namespace) -> dict[str, Any]:
    env: dict[str, Any] = {
        "profile": args.profile,
        "random_weights": models.is_random,
        "device": str(models.device),
        "dtype": str(models.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg_start": list(os.getloadavg()),
    }
    if models.device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(models.device)
    return env


def markdown(summary: dict[str, Any]) -> str:
    env = summary["environment"]
    lines = [
        f"# Model speed-ups (inference/accel.py): {env['device']} ({env['dtype']})",
        "",
        f"Profile `{env['profile']}` — **random weights**: outputs are noise, costs are real. "
        f"torch {env['torch']}" + (f", GPU {env['gpu']}" if "gpu" in env else "") + ". "
        f"{summary['frames']} frames timed per batch size after `warm`.",
        f"Tolerance vs baseline: latents max abs diff <= {LATENT_REL_TOL:g} x max |baseline|, "
        f"faces max abs diff <= {FACE_LEVEL_TOL} levels of 255.",
        "",
        "| option | warm s | batch | UNet ms/frame | VAE decode ms/frame | UNet diff (rel) | "
        "faces diff max / mean | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in summary["results"]:
        for row in result["batches"]:
            lines.append(
                f"| {result['option']} | {result['warm_s']:.1f} | {row['batch_size']} | "
                f"{row['unet_ms_per_frame']:.2f} | {row['vae_decode_ms_per_frame']:.2f} | "
                f"{row['unet_max_abs_diff']:.2e} ({row['unet_rel_diff']:.1e}) | "
                f"{row['faces_max_abs_diff']} / {row['faces_mean_abs_diff']:.3f} | "
                f"{'yes' if row['within_tolerance'] else '**no**'} |"
            )
    for spec, error in summary["failed"].items():
        lines.append(f"| {spec} | failed: {error} | | | | | | |")
    if summary["skipped"]:
        lines += ["", "Not run (budget): " + ", ".join(summary["skipped"]) + "."]
    if summary["note"]:
        lines += ["", summary["note"]]
    return "\n".join(lines) + "\n"


def _write(args: argparse.Namespace, summary: dict[str, Any]) -> str:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"models-{summary['environment']['device'].split(':')[0]}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(summary)
    stem.with_suffix(".md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.best:
        summary = json.loads(args.best.read_text())
        sys.stdout.write(best_option(summary, args.batch_list[-1]) + "\n")
        return 0
    started = time.perf_counter()
    base = load_models(EngineConfig(profile=args.profile, device=args.device))
    summary: dict[str, Any] = {
        "note": args.note,
        "environment": _environment(base, args),
        "frames": args.frames,
        "results": [],
        "failed": {},
        "skipped": [],
    }
    reference: dict[int, tuple[torch.Tensor, np.ndarray]] = {}
    table = ""
    for spec in args.option_list:
        if args.budget_seconds and time.perf_counter() - started > args.budget_seconds:
            summary["skipped"].append(spec)
            continue
        _log(f"option {spec}")
        try:
            summary["results"].append(run_option(base, spec, args, reference))
        except Exception as error:  # one failing option must not lose the others' figures
            _log(f"option {spec} failed: {error!r}")
            summary["failed"][spec] = f"{type(error).__name__}: {str(error)[:200]}"
        summary["environment"]["loadavg_end"] = list(os.getloadavg())
        table = _write(args, summary)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
