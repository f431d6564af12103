"""The engine on a CUDA device in fp16, checked against the same engine on the CPU in fp32.

Marked ``gpu``: skipped where torch sees no CUDA device (CI). Self-contained (no conftest
fixtures), so a GPU machine with torch and the runtime requirements runs it with::

    python -m pytest --noconftest -o addopts="" tests/inference/test_cuda.py

The avatar is prepared by the CPU engine and generated from by both: the avatar folder does
not depend on the device that made it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from inference.budget import default_budget_bytes
from inference.config import (
    PROFILE_MUSETALK_V15,
    PROFILE_RANDOM_TINY,
    EngineConfig,
    GenerateConfig,
    PrepareConfig,
)
from inference.models import load_models, predict_latents, save_official_layout
from inference.pipeline import Engine
from inference.preparation import prepare_avatar
from inference.vae import decode_latents
from tests.inference.faces_centred import CentredFace
from tests.media import decode_audio, make_face_video, tone

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FPS = 25


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[str, Engine]]:
    made = {
        device: Engine.from_config(EngineConfig(profile=PROFILE_RANDOM_TINY, device=device))
        for device in ("cpu", "cuda")
    }
    yield made
    for engine in made.values():
        engine.close()


@pytest.fixture(scope="module")
def avatar_dir(engines: dict[str, Engine], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cuda")
    video = make_face_video(root / "face.mp4", seconds=0.4, fps=FPS, size=(192, 240))
    out = root / "avatar"
    config = PrepareConfig(batch_size=5, idle_video=False)
    prepare_avatar(
        video, out, vae=engines["cpu"].models.vae, face_backend=CentredFace(), config=config
    )
    return out


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def test_it_loads_the_models_in_fp16_on_the_device(engines: dict[str, Engine]) -> None:
    models = engines["cuda"].models
    assert models.device.type == "cuda" and models.dtype == torch.float16
    assert next(models.unet.parameters()).dtype == torch.float16
    assert next(models.vae.parameters()).device.type == "cuda"


def test_fp16_on_the_device_matches_fp32_on_the_cpu(engines: dict[str, Engine]) -> None:
    cpu, cuda = engines["cpu"].models, engines["cuda"].models
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(4, 8, 32, 32, generator=generator)
    audio = torch.randn(4, 50, 384, generator=generator) * 0.5

    expected = predict_latents(cpu, latents, audio)
    got = predict_latents(cuda, latents.to("cuda", torch.float16), audio.to("cuda", torch.float16))

    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    scale = expected.abs().mean()
    assert (got.float().cpu() - expected).abs().mean() <= 0.01 * scale
    faces_cpu = decode_latents(cpu.vae, expected).astype(np.int16)
    faces_cuda = decode_latents(cuda.vae, got).astype(np.int16)
    assert np.abs(faces_cuda - faces_cpu).mean() < 2.0  # of 255


def test_chunks_generated_on_the_device_match_the_cpu_and_join_cleanly(
    engines: dict[str, Engine], avatar_dir: Path, tmp_path: Path
) -> None:
    signal = tone(1.2)
    config = GenerateConfig(batch_size=8, chunk_seconds=0.4)
    made = {
        device: list(engine.generate_chunks(avatar_dir, signal, tmp_path / device, config=config))
        for device, engine in engines.items()
    }

    assert [c.frame_count for c in made["cuda"]] == [c.frame_count for c in made["cpu"]]
    assert sum(c.frame_count for c in made["cuda"]) == 30
    for on_cpu, on_cuda in zip(made["cpu"], made["cuda"], strict=True):
        a, b = _frames(on_cpu.path), _frames(on_cuda.path)
        assert len(a) == len(b) == on_cuda.frame_count
        diff = np.abs(np.stack(a).astype(np.int16) - np.stack(b).astype(np.int16))
        assert diff.mean() < 2.0
    played = []
    for chunk in made["cuda"]:
        samples, duration = decode_audio(chunk.path)
        played.append(samples[: round(duration * 48000)])
    joined = np.concatenate(played)
    assert len(joined) == round(1.2 * 48000)
    reference = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(joined)) / 48000)
    assert np.abs(joined - reference).max() < 0.05


def test_the_official_layout_loads_onto_the_device(
    engines: dict[str, Engine], tmp_path: Path
) -> None:
    save_official_layout(engines["cpu"].models, tmp_path)
    loaded = load_models(
        EngineConfig(profile=PROFILE_MUSETALK_V15, models_dir=tmp_path, device="cuda")
    )
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 8, 32, 32, generator=generator).to("cuda", torch.float16)
    audio = (torch.randn(2, 50, 384, generator=generator) * 0.5).to("cuda", torch.float16)

    assert loaded.is_random is False and loaded.dtype == torch.float16
    assert torch.equal(
        predict_latents(loaded, latents, audio),
        predict_latents(engines["cuda"].models, latents, audio),
    )


def test_the_memory_budget_is_a_share_of_free_device_memory() -> None:
    free, _total = torch.cuda.mem_get_info()
    assert 0 < default_budget_bytes("cuda", fraction=0.5) <= free
