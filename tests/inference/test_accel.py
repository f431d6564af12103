"""``inference.accel``: every option leaves ``predict_latents`` / ``decode_latents`` outputs as
they were. ``random-tiny`` weights (random, never a real model) on the CPU in float32; the
CUDA-only tests skip without a CUDA device."""

from __future__ import annotations

import copy
import os
import threading

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from inference.accel import (
    AccelOptions,
    GraphedModule,
    GraphShared,
    apply_accel,
    graphed_modules,
    heavy_modules,
    options_for,
    parse_options,
    warm,
)
from inference.config import PROFILE_RANDOM_TINY, EngineConfig
from inference.models import MuseTalkModels, load_models, predict_latents
from inference.vae import decode_latents

# float32 on the CPU: a different attention kernel or a compiled graph reorders sums; the tiny
# UNet's latents are O(1), so 1e-4 is ~1000 float32 ulps and far below any real change.
FLOAT32_ATOL = 1e-4
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _inputs(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 8, 32, 32, generator=generator)
    return latents, torch.randn(batch, 50, 384, generator=generator)


def _outputs(models: MuseTalkModels, batch: int = 2) -> tuple[torch.Tensor, np.ndarray]:
    latents, audio = _inputs(batch)
    predicted = predict_latents(models, latents, audio)
    return predicted.float().cpu(), decode_latents(models.vae, predicted)


@pytest.fixture()
def models(tiny_models: MuseTalkModels) -> MuseTalkModels:
    """A private copy of the shared ``random-tiny`` models (``apply_accel`` changes them)."""
    return copy.deepcopy(tiny_models)


@pytest.fixture(scope="module")
def reference(tiny_models: MuseTalkModels) -> tuple[torch.Tensor, np.ndarray]:
    return _outputs(tiny_models)


def test_default_options_change_nothing(
    models: MuseTalkModels, reference: tuple[torch.Tensor, np.ndarray]
) -> None:
    apply_accel(models, AccelOptions())
    warm(models, [2])
    latents, faces = _outputs(models)
    assert torch.equal(latents, reference[0])
    assert np.array_equal(faces, reference[1])


def test_cuda_only_options_are_noops_on_the_cpu(
    models: MuseTalkModels, reference: tuple[torch.Tensor, np.ndarray]
) -> None:
    benchmark = torch.backends.cudnn.benchmark
    options = AccelOptions(channels_last=True, cudnn_benchmark=True, cuda_graphs=True)
    apply_accel(models, options)
    warm(models, [2])
    assert torch.backends.cudnn.benchmark == benchmark
    assert graphed_modules(models) == []
    assert models.unet.conv_in.weight.is_contiguous()  # not channels_last
    latents, faces = _outputs(models)
    assert torch.equal(latents, reference[0])
    assert np.array_equal(faces, reference[1])


def test_sdpa_is_already_the_default_and_matches_classic_attention(
    models: MuseTalkModels, reference: tuple[torch.Tensor, np.ndarray]
) -> None:
    processors = list(models.unet.attn_processors.values())
    processors += list(models.vae.attn_processors.values())
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)
    models.unet.set_attn_processor(AttnProcessor())
    models.vae.set_attn_processor(AttnProcessor())
    classic, _ = _outputs(models)
    assert (classic - reference[0]).abs().max().item() < FLOAT32_ATOL
    apply_accel(models, AccelOptions(sdpa=True))
    assert all(isinstance(p, AttnProcessor2_0) for p in models.unet.attn_processors.values())
    latents, faces = _outputs(models)
    assert torch.equal(latents, reference[0])
    assert np.array_equal(faces, reference[1])


def test_it_rejects_an_unknown_compile_mode() -> None:
    with pytest.raises(ValueError, match="fastest"):
        AccelOptions(compile="fastest")
    with pytest.raises(ValueError, match="compile_vae mode 'fastest'"):
        parse_options("compile_vae=fastest")


def test_compile_vae_compiles_the_decoder_alone(models: MuseTalkModels) -> None:
    apply_accel(models, parse_options("compile_vae=default"))
    assert models.vae.decoder._compiled_call_impl is not None
    assert all(block._compiled_call_impl is None for block in models.unet.up_blocks)
    assert models.vae.encoder._compiled_call_impl is None


def test_compile_covers_the_decoder_so_compile_vae_adds_nothing(models: MuseTalkModels) -> None:
    apply_accel(models, AccelOptions(compile="default", compile_vae="max-autotune"))
    assert models.vae.decoder._compiled_call_impl is not None
    assert all(block._compiled_call_impl is not None for block in models.unet.up_blocks)


def test_labels_name_the_options() -> None:
    assert AccelOptions().label() == "baseline"
    options = AccelOptions(channels_last=True, compile="default", cuda_graphs=True)
    assert options.label() == "channels_last+compile=default+cuda_graphs"
    options = parse_options("cuda_graphs,compile_vae")
    assert options == AccelOptions(cuda_graphs=True, compile_vae="default")
    assert options.label() == "compile_vae=default+cuda_graphs"


def test_a_graphed_module_runs_eagerly_for_shapes_it_has_not_captured(
    models: MuseTalkModels, reference: tuple[torch.Tensor, np.ndarray]
) -> None:
    shared = GraphShared()
    for parent, name, module in heavy_modules(models):
        setattr(parent, name, GraphedModule(module, shared))
    wrapped = models.unet.up_blocks[1]
    assert isinstance(wrapped, GraphedModule)
    # attributes the UNet step reads fall through to the block
    assert wrapped.has_cross_attention is True
    assert len(wrapped.resnets) == len(wrapped.module.resnets)
    latents, faces = _outputs(models)
    assert torch.equal(latents, reference[0])
    assert np.array_equal(faces, reference[1])
    assert all(module.graphs == {} for module in graphed_modules(models))


@pytest.mark.skipif(
    os.environ.get("ACCEL_COMPILE_TESTS") != "1",
    reason="torch.compile on a 2-core CPU: ~6 min cold (inductor C++ codegen), ~50 s once "
    "inductor's cache is warm; ACCEL_COMPILE_TESTS=1 runs it",
)
def test_compile_on_the_cpu_keeps_outputs(
    models: MuseTalkModels, reference: tuple[torch.Tensor, np.ndarray]
) -> None:
    apply_accel(models, AccelOptions(compile="default"))
    warm(models, [2])
    latents, faces = _outputs(models)
    assert (latents - reference[0]).abs().max().item() < FLOAT32_ATOL
    assert np.abs(faces.astype(int) - reference[1].astype(int)).max() <= 1


# -- CUDA ---------------------------------------------------------------------------------------

# fp16 on CUDA: a graph replays the same kernels, so outputs agree to fp16 rounding at most.
FLOAT16_ATOL = 2e-3
# Kernels that sum in another order (NHWC, compiled): the bounds bench/models.py holds options
# to: latents within 1% of the largest, faces within 4 levels of 255
LATENT_REL_TOL = 1e-2
FACE_LEVEL_TOL = 4


@pytest.fixture(scope="module")
def cuda_models() -> MuseTalkModels:
    return load_models(EngineConfig(profile=PROFILE_RANDOM_TINY, seed=0, device="cuda"))


@pytest.mark.gpu
@needs_cuda
def test_cuda_graphs_replay_the_eager_outputs(cuda_models: MuseTalkModels) -> None:
    expected = {batch: _outputs(cuda_models, batch) for batch in (2, 3)}
    models = apply_accel(copy.deepcopy(cuda_models), AccelOptions(cuda_graphs=True))
    warm(models, [2])
    assert all(len(module.graphs) == 1 for module in graphed_modules(models))
    for batch in (2, 3):  # 2 replays graphs, 3 was never captured and runs eagerly
        latents, faces = _outputs(models, batch)
        assert (latents - expected[batch][0]).abs().max().item() <= FLOAT16_ATOL
        assert np.abs(faces.astype(int) - expected[batch][1].astype(int)).max() <= 1
    assert all(len(module.graphs) == 1 for module in graphed_modules(models))


@pytest.mark.gpu
@needs_cuda
def test_cuda_graphs_are_safe_for_concurrent_streams(cuda_models: MuseTalkModels) -> None:
    models = apply_accel(copy.deepcopy(cuda_models), AccelOptions(cuda_graphs=True))
    warm(models, [2])
    inputs = [_inputs(2, seed) for seed in range(4)]
    expected = [predict_latents(cuda_models, *pair).float().cpu() for pair in inputs]
    results: dict[int, list[torch.Tensor]] = {i: [] for i in range(4)}

    def stream(index: int) -> None:
        for _ in range(20):
            results[index].append(predict_latents(models, *inputs[index]).float().cpu())

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(4):
        for got in results[index]:
            assert (got - expected[index]).abs().max().item() <= FLOAT16_ATOL


@pytest.mark.gpu
@needs_cuda
def test_channels_last_and_cudnn_benchmark_keep_outputs(cuda_models: MuseTalkModels) -> None:
    expected = _outputs(cuda_models)
    benchmark = torch.backends.cudnn.benchmark
    try:
        options = AccelOptions(channels_last=True, cudnn_benchmark=True)
        models = apply_accel(copy.deepcopy(cuda_models), options)
        warm(models, [2])
        assert models.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        latents, faces = _outputs(models)
    finally:
        torch.backends.cudnn.benchmark = benchmark
    # NHWC kernels sum in another order: fp16 rounding of the values, not of the last ulp
    scale = expected[0].abs().max().item()
    assert (latents - expected[0]).abs().max().item() <= LATENT_REL_TOL * scale
    assert np.abs(faces.astype(int) - expected[1].astype(int)).max() <= FACE_LEVEL_TOL


@pytest.mark.gpu
@needs_cuda
def test_compiling_the_vae_decoder_keeps_outputs_at_every_batch_size(
    cuda_models: MuseTalkModels,
) -> None:
    expected = {batch: _outputs(cuda_models, batch) for batch in (1, 2, 3)}
    models = apply_accel(copy.deepcopy(cuda_models), AccelOptions(compile_vae="default"))
    warm(models, [1, 2, 4])
    for batch, (_, faces) in expected.items():
        _, got = _outputs(models, batch)
        assert np.abs(got.astype(int) - faces.astype(int)).max() <= FACE_LEVEL_TOL


def test_auto_graphs_on_cuda_and_applies_nothing_on_a_cpu() -> None:
    assert options_for("auto", "cuda") == AccelOptions(cuda_graphs=True)
    assert options_for("auto", "cpu") == AccelOptions()
    assert options_for("none", "cuda") == AccelOptions()
    assert options_for("", "cuda") == AccelOptions()
    assert options_for("channels_last,compile_vae", "cuda") == AccelOptions(
        channels_last=True, compile_vae="default"
    )
