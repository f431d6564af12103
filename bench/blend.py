"""Paste-back and BGR->yuv420p: the CPU path (OpenCV/numpy + libswscale) against the tensor
path (``DeviceBlender`` + ``bgr_to_yuv420p``) at one batch size.

Not a test. Run from the repository root::

    .venv/bin/python -m bench.blend                  # device cpu, batch 8
    .venv/bin/python -m bench.blend --device cuda    # on a GPU machine

Frames are the first ``--frames`` of the demo clip ``sun.mp4`` (576x768; synthesized when it is
absent). No face detection runs: each stored frame gets a face box near the centre whose
size varies from 180 to 300 pixels (so the 256 face is scaled both down and up), the usual
1.5x crop box, and a blurred-ellipse mask. The faces pasted are random noise; neither
path's cost depends on pixel values. Columns, in ms per frame:

- ``cpu``: ``blend_face`` per frame, then ``VideoFrame.from_ndarray(bgr24).reformat(yuv420p)``
  (what ``Mp4Writer.write`` has libswscale do) or ``cv2.cvtColor(COLOR_BGR2YUV_I420)``;
- ``tensor``: ``DeviceBlender.blend`` + ``bgr_to_yuv420p`` for a batch on ``--device``, faces
  already there (as ``decode_latents_tensor`` leaves them), then the planes copied to host
  memory for the encoder (``to_host``). CUDA timings synchronise the device.

Results: ``bench/results/blend-<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch

from inference.avatar_store import PreparedAvatar
from inference.blending import blend_face, expanded_crop_box
from inference.device_blend import DeviceBlender, bgr_to_yuv420p
from inference.media import read_video
from tests.media import SHARED_MEDIA

DEFAULT_VIDEO = SHARED_MEDIA / "sun.mp4"
RESULTS = Path(__file__).resolve().parent / "results"
SIZE = (576, 768)  # (width, height)


def load_frames(video: Path, count: int) -> tuple[list[np.ndarray], str]:
    """``count`` BGR frames of SIZE: the clip's first frames, or a noisy moving gradient."""
    width, height = SIZE
    if video.is_file():
        frames = read_video(video, max_frames=count).frames
        if len(frames) == count and frames[0].shape[:2] == (height, width):
            return [np.ascontiguousarray(f) for f in frames], str(video)
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(0).integers(0, 24, size=(height, width, 3), dtype=np.uint8)
    frames = []
    for i in range(count):
        base = ((x + 4 * i) % 256)[..., None] * np.array([1, 0.5, 0.25]) + (y % 64)[..., None]
        frames.append(np.ascontiguousarray((base % 232).astype(np.uint8) + noise))
    return frames, "synthesized"


def _mask(side: int) -> np.ndarray:
    """A blurred ellipse on the lower half of a ``side`` x ``side`` crop, like a jaw mask."""
    mask = np.zeros((side, side), dtype=np.uint8)
    cv2.ellipse(mask, (side // 2, 2 * side // 3), (side // 4, side // 6), 0, 0, 360, 255, -1)
    mask[: side // 2] = 0
    size = int(0.1 * side // 2 * 2) + 1
    return np.asarray(cv2.GaussianBlur(mask, (size, size), 0))


def synthetic_avatar(frames: list[np.ndarray]) -> PreparedAvatar:
    """Face boxes near the centre, 180..300 px wide, their crop boxes and masks."""
    width, height = SIZE
    boxes, masks, crops = [], [], []
    for i in range(len(frames)):
        side = 180 + (120 * i) // max(1, len(frames) - 1)
        x1, y1 = (width - side) // 2 + (i % 5) * 3, height // 3 + (i % 7) * 2
        box = (x1, y1, x1 + side, y1 + side + 10)
        crop = expanded_crop_box(box)
        boxes.append(box)
        crops.append(crop)
        masks.append(_mask(crop[2] - crop[0]))
    return PreparedAvatar(
        manifest=None,  # type: ignore[arg-type]  # the blender reads frames, boxes and masks
        frames=frames,
        latents=torch.zeros(0),
        face_boxes=boxes,
        masks=masks,
        mask_boxes=crops,
        fps=25,
    )


def _timed(work: Callable[[], Any], sync: Callable[[], None], seconds: float) -> float:
    """Mean seconds per call of ``work`` over at least ``seconds`` (after one warm-up call)."""
    work()
    sync()
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        work()
        sync()
        calls += 1
    return (time.perf_counter() - started) / calls


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    frames, source = load_frames(args.video, args.frames)
    avatar = synthetic_avatar(frames)
    batch = args.batch
    indices = [(3 * k) % len(frames) for k in range(batch)]
    faces_np = np.random.default_rng(1).integers(0, 256, (batch, 256, 256, 3), dtype=np.uint8)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def cpu_blend() -> list[np.ndarray]:
        return [
            blend_face(
                frames[j], faces_np[b], avatar.face_boxes[j], avatar.masks[j], avatar.mask_boxes[j]
            )
            for b, j in enumerate(indices)
        ]

    blended = cpu_blend()

    def cpu_swscale() -> None:
        for frame in blended:
            av.VideoFrame.from_ndarray(frame, format="bgr24").reformat(format="yuv420p")

    def cpu_cv2() -> None:
        for frame in blended:
            cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)

    started = time.perf_counter()
    blender = DeviceBlender.for_avatar(avatar, device)
    sync()
    upload_s = time.perf_counter() - started
    faces = torch.from_numpy(faces_np).to(device)
    out = blender.blend(indices, faces)
    planes = bgr_to_yuv420p(out)

    per = 1000.0 / batch
    ms = {
        "cpu_blend": per * _timed(cpu_blend, sync, args.seconds),
        "cpu_swscale": per * _timed(cpu_swscale, sync, args.seconds),
        "cpu_cv2": per * _timed(cpu_cv2, sync, args.seconds),
        "tensor_blend": per * _timed(lambda: blender.blend(indices, faces), sync, args.seconds),
        "tensor_yuv": per * _timed(lambda: bgr_to_yuv420p(out), sync, args.seconds),
        "to_host": per * _timed(lambda: planes.cpu(), sync, args.seconds),
    }
    ms["cpu_total"] = ms["cpu_blend"] + ms["cpu_swscale"]
    ms["tensor_total"] = ms["tensor_blend"] + ms["tensor_yuv"] + ms["to_host"]
    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pyav": av.__version__,
        "opencv": cv2.__version__,
        "source": source,
        "frame": list(SIZE),
        "stored_frames": len(frames),
        "region": list(blender.region),
        "loadavg": list(os.getloadavg()),
    }
    memory = {
        "upload_s": upload_s,
        "frames_mb": blender.frames.numel() / 1e6,
        "masks_mb": blender.masks.numel() / 1e6,
    }
    summary = {"batch": batch, "environment": env, "upload": memory, "ms_per_frame": ms}
    return {**summary, "note": args.note}


def markdown(summary: dict[str, Any]) -> str:
    env, ms, up = summary["environment"], summary["ms_per_frame"], summary["upload"]
    rx1, ry1, rx2, ry2 = env["region"]
    lines = [
        f"# Paste-back + BGR->yuv420p, ms per frame (batch {summary['batch']}, {env['device']})",
        "",
        f"{env['device_name']}, {env['cpu_count']} CPUs ({env['torch_threads']} torch threads), "
        f"torch {env['torch']}, PyAV {env['pyav']}, OpenCV {env['opencv']}; "
        f"{env['frame'][0]}x{env['frame'][1]} frames from {env['source']}, "
        f"{env['stored_frames']} stored, blend region {rx2 - rx1}x{ry2 - ry1}; "
        f"load average {env['loadavg'][0]:.1f}. Faces are random noise (no model runs).",
        "",
        "| path | blend | colour conversion | copy to host | total |",
        "|---|---|---|---|---|",
        f"| CPU: blend_face + PyAV/libswscale | {ms['cpu_blend']:.2f} | {ms['cpu_swscale']:.2f} "
        f"| - | {ms['cpu_total']:.2f} |",
        f"| CPU: blend_face + cv2.cvtColor I420 | {ms['cpu_blend']:.2f} | {ms['cpu_cv2']:.2f} "
        f"| - | {ms['cpu_blend'] + ms['cpu_cv2']:.2f} |",
        f"| tensor on {env['device']}: DeviceBlender + bgr_to_yuv420p | {ms['tensor_blend']:.2f} "
        f"| {ms['tensor_yuv']:.2f} | {ms['to_host']:.2f} | {ms['tensor_total']:.2f} |",
        "",
        f"DeviceBlender.for_avatar: {up['upload_s']:.2f} s, {up['frames_mb']:.1f} MB of frames "
        f"and {up['masks_mb']:.1f} MB of masks on the device.",
    ]
    if summary["note"]:
        lines += ["", summary["note"]]
    return "\n".join(lines) + "\n"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.blend", description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=25, help="stored avatar frames")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per column")
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--note", default="")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    summary = run(args)
    table = markdown(summary)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"blend-{torch.device(args.device).type}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
