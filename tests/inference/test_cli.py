"""``python -m inference``: real subprocesses on the ``random-tiny`` profile (random weights)."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference.cli import main
from inference.media import probe_audio, probe_video
from tests.media import make_face_video, make_speech_wav

ROOT = Path(__file__).resolve().parents[2]
SPEECH_SECONDS = 0.6

Prepared = tuple[Path, subprocess.CompletedProcess[str]]


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "inference", *(str(a) for a in args)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-media")
    return {
        "video": make_face_video(root / "face.mp4", seconds=0.4, size=(192, 240)),
        "speech": make_speech_wav(root / "speech.wav", seconds=SPEECH_SECONDS),
    }


@pytest.fixture(scope="module")
def prepared(media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    avatar = tmp_path_factory.mktemp("cli-avatars") / "astro"
    done = _run(
        "prepare", media["video"], "--out", avatar, "--profile", "random-tiny",
        "--batch-size", "4", "--max-frames", "4",
    )  # fmt: skip
    return avatar, done


def test_it_prepares_an_avatar_and_says_the_weights_are_random(prepared: Prepared) -> None:
    avatar, done = prepared

    assert done.returncode == 0, done.stderr
    assert (avatar / "manifest.json").is_file()
    assert "RANDOM WEIGHTS" in done.stderr
    assert "prepared" in done.stdout and "4 frames" in done.stdout
    assert "Traceback" not in done.stderr


def test_it_generates_an_mp4_with_audio(
    prepared: Prepared, media: dict[str, Path], tmp_path: Path
) -> None:
    avatar, _ = prepared
    out = tmp_path / "talk.mp4"
    done = _run(
        "generate", avatar, media["speech"], "--out", out, "--profile", "random-tiny",
        "--batch-size", "4",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    info = probe_video(out)
    assert info.frame_count == math.floor(SPEECH_SECONDS * 25)
    assert (info.fps, info.width, info.height, info.has_audio) == (25.0, 192, 240, True)
    assert abs(probe_audio(out).duration_s - info.duration_s) <= 1 / 25
    assert "RANDOM WEIGHTS" in done.stderr
    assert f"{info.frame_count}/{info.frame_count}" in done.stderr  # the finished tqdm bar
    assert f"wrote {out}" in done.stdout


def test_it_fails_in_one_line_when_the_weights_are_missing(
    media: dict[str, Path], tmp_path: Path
) -> None:
    done = _run(
        "generate", tmp_path, media["speech"], "--out", tmp_path / "x.mp4",
        "--models-dir", tmp_path / "models",
    )  # fmt: skip

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: MuseTalk v1.5 weights are missing from")
    assert "musetalkV15/unet.pth" in lines[0] and "download_models" in lines[0]
    assert not (tmp_path / "x.mp4").exists()


def test_it_writes_chunks(prepared: Prepared, media: dict[str, Path], tmp_path: Path) -> None:
    avatar, _ = prepared
    out, err = io.StringIO(), io.StringIO()
    argv = ["generate", str(avatar), str(media["speech"]), "--profile", "random-tiny"]
    argv += ["--chunk-seconds", "0.4", "--chunks-dir", str(tmp_path / "chunks")]

    assert main(argv, out=out, err=err) == 0, err.getvalue()
    written = sorted((tmp_path / "chunks").glob("*.mp4"))
    assert [p.name for p in written] == ["chunk_0001.mp4", "chunk_0002.mp4"]
    assert [probe_video(p).frame_count for p in written] == [10, 5]
    assert out.getvalue().count("wrote ") == 2


def test_it_names_a_folder_that_is_not_an_avatar(media: dict[str, Path], tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    argv = ["generate", str(tmp_path), str(media["speech"]), "--out", str(tmp_path / "x.mp4")]

    assert main([*argv, "--profile", "random-tiny"], out=out, err=err) == 1
    assert (
        err.getvalue().splitlines()[-1] == f"error: {tmp_path.name} is not a prepared avatar "
        "(no manifest.json)"
    )
    assert out.getvalue() == ""


def test_it_requires_chunks_dir_with_chunk_seconds(media: dict[str, Path], tmp_path: Path) -> None:
    argv = ["generate", str(tmp_path), str(media["speech"]), "--chunk-seconds", "0.4"]

    with pytest.raises(SystemExit) as caught:
        main(argv, out=io.StringIO(), err=io.StringIO())
    assert caught.value.code == 2
