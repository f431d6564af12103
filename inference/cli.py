"""The engineers' command line: ``python -m inference prepare|generate ...``.

This is the one place in ``inference/`` that talks to a terminal: progress bars (tqdm) and
messages go to stderr, the result line to stdout. ``main`` returns the exit status (0 or 1);
typed ``InferenceError`` failures become a single ``error: ...`` line without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from inference.config import (
    PROFILE_MUSETALK_V15,
    PROFILES,
    RANDOM_PROFILES,
    EngineConfig,
    GenerateConfig,
    PrepareConfig,
)
from inference.errors import InferenceError

if TYPE_CHECKING:  # the engine pulls in torch and diffusers: loaded only when a command runs
    from inference.pipeline import Engine

RANDOM_BANNER = (
    "!!! profile {profile}: RANDOM WEIGHTS - the output is noise, NOT real lip-sync. "
    "Use --profile musetalk-v15 with downloaded weights for real results. !!!"
)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default=PROFILE_MUSETALK_V15,
        choices=PROFILES,
        help="model profile (default: %(default)s; the random-* ones are NOT real models)",
    )
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO messages")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference", description="MuseTalk v1.5 engine: prepare and generate."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="turn a video into an avatar folder")
    prepare.add_argument("video", type=Path)
    prepare.add_argument("--out", type=Path, required=True, help="the avatar folder to write")
    _add_engine_options(prepare)
    prepare.add_argument("--batch-size", type=_positive, default=20)
    prepare.add_argument("--bbox-shift", type=int, default=0)
    prepare.add_argument("--max-frames", type=_non_negative, default=0, help="0: every frame")

    generate = commands.add_parser("generate", help="lip-sync an avatar to an audio file")
    generate.add_argument("avatar_dir", type=Path)
    generate.add_argument("audio", type=Path)
    generate.add_argument("--out", type=Path, help="the MP4 to write")
    _add_engine_options(generate)
    generate.add_argument("--batch-size", type=_positive, default=8)
    generate.add_argument("--fps", type=_positive, default=25)
    generate.add_argument("--chunk-seconds", type=_seconds, help="write playable chunks instead")
    generate.add_argument("--chunks-dir", type=Path, help="where the chunks go")
    return parser


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Cross-option rules argparse cannot express; ``parser.error`` exits with status 2."""
    if args.command != "generate":
        return
    if (args.chunk_seconds is None) != (args.chunks_dir is None):
        parser.error("--chunk-seconds and --chunks-dir go together")
    if args.chunk_seconds is None and args.out is None:
        parser.error("--out is required (or --chunk-seconds with --chunks-dir)")


def _check_device(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InferenceError(f"device {device!r} was requested but CUDA is not available")


def _load_engine(args: argparse.Namespace, err: TextIO) -> Engine:
    from inference.pipeline import Engine

    if args.profile in RANDOM_PROFILES:
        err.write(RANDOM_BANNER.format(profile=args.profile) + "\n")
    _check_device(args.device)
    config = EngineConfig(profile=args.profile, models_dir=args.models_dir, device=args.device)
    return Engine.from_config(config)


def _prepare(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    from tqdm import tqdm

    engine = _load_engine(args, err)
    config = PrepareConfig(
        batch_size=args.batch_size, bbox_shift=args.bbox_shift, max_frames=args.max_frames
    )
    try:
        with tqdm(total=100, unit="%", desc="prepare", file=err) as bar:

            def progress(percent: int, stage: str) -> None:
                bar.set_description(stage)
                bar.update(percent - bar.n)

            manifest = engine.prepare(args.video, args.out, config=config, progress=progress)
    finally:
        engine.close()
    out.write(
        f"prepared {args.out}: {manifest.frame_count} frames "
        f"{manifest.frame_width}x{manifest.frame_height} at {manifest.fps} fps "
        f"({manifest.frames_without_face} without a detected face)\n"
    )


def _generate_file(engine: Engine, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    from tqdm import tqdm

    config = GenerateConfig(batch_size=args.batch_size, fps=args.fps)
    with tqdm(unit="frame", desc="generate", file=err) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = engine.generate_file(
            args.avatar_dir, args.audio, args.out, config=config, progress=progress
        )
    out.write(
        f"wrote {result.path}: {result.frame_count} frames at {result.fps} fps "
        f"({result.duration_s:.2f} s)\n"
    )


def _generate_chunks(engine: Engine, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    from tqdm import tqdm

    config = GenerateConfig(
        batch_size=args.batch_size, fps=args.fps, chunk_seconds=args.chunk_seconds
    )
    chunks = engine.generate_chunks(args.avatar_dir, args.audio, args.chunks_dir, config=config)
    with tqdm(unit="chunk", desc="generate", file=err) as bar:
        for chunk in chunks:
            bar.total = chunk.total_chunks
            bar.update(1)
            out.write(
                f"wrote {chunk.path}: frames {chunk.first_frame}.."
                f"{chunk.first_frame + chunk.frame_count - 1} ({chunk.duration_s:.2f} s)\n"
            )


def _generate(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    engine = _load_engine(args, err)
    try:
        if args.chunk_seconds is not None:
            _generate_chunks(engine, args, out, err)
        else:
            _generate_file(engine, args, out, err)
    finally:
        engine.close()


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one command; returns the exit status (0 ok, 1 failed, 130 interrupted)."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=err,
    )
    try:
        if args.command == "prepare":
            _prepare(args, out, err)
        else:
            _generate(args, out, err)
    except InferenceError as exc:
        err.write(f"error: {_one_line(exc.message)}\n")
        return 1
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return 130
    return 0
