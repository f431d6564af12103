from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from inference.vae import decode_latents, encode_crops, full_vae_config, tiny_vae_config

# Different batch sizes round differently on the CPU: ~2e-7 on these latents from NCHW inputs
# (~1e-4 when the encoder ran channels_last).
BATCH_TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


def _crops(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 256, 256, 3), dtype=np.uint8)


def _reference_latent(vae: AutoencoderKL, rgb: np.ndarray) -> torch.Tensor:
    """Spec §4.1 step by step for RGB (256,256,3) uint8 already in [-1,1] after normalisation."""
    pixels = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        return vae.encode(pixels * 2 - 1).latent_dist.mean * 0.18215


def test_it_encodes_crops_to_masked_and_reference_latents(tiny_vae: AutoencoderKL) -> None:
    crops = _crops(2)
    latents = encode_crops(tiny_vae, crops)
    assert latents.shape == (2, 8, 32, 32)
    assert latents.dtype == torch.float32
    rgb = crops[1, :, :, ::-1]
    masked = rgb.copy()
    masked[128:] = 0  # black lower half: exactly -1 after normalisation
    torch.testing.assert_close(
        latents[1:2, :4], _reference_latent(tiny_vae, masked), **BATCH_TOLERANCE
    )
    torch.testing.assert_close(
        latents[1:2, 4:], _reference_latent(tiny_vae, rgb), **BATCH_TOLERANCE
    )


def test_it_ignores_the_lower_half_only_in_the_masked_channels(tiny_vae: AutoencoderKL) -> None:
    crops = _crops(2)
    crops[1, :128] = crops[0, :128]  # same upper half, different lower half
    latents = encode_crops(tiny_vae, crops)
    torch.testing.assert_close(latents[0, :4], latents[1, :4], **BATCH_TOLERANCE)
    assert (latents[0, 4:] - latents[1, 4:]).abs().max() > 0.01


def test_it_is_deterministic_and_independent_of_the_batch_size(tiny_vae: AutoencoderKL) -> None:
    crops = _crops(3, seed=1)
    first = encode_crops(tiny_vae, crops, batch_size=2)
    assert torch.equal(first, encode_crops(tiny_vae, crops, batch_size=2))
    torch.testing.assert_close(
        first, encode_crops(tiny_vae, crops, batch_size=8), **BATCH_TOLERANCE
    )


def test_it_reads_the_scaling_factor_from_the_vae_config(tiny_vae: AutoencoderKL) -> None:
    rescaled = AutoencoderKL(**tiny_vae_config(), scaling_factor=0.5).eval()
    rescaled.load_state_dict(tiny_vae.state_dict())
    crops = _crops(1)
    ratio = encode_crops(rescaled, crops) / encode_crops(tiny_vae, crops)
    torch.testing.assert_close(ratio, torch.full_like(ratio, 0.5 / 0.18215))


def test_it_decodes_latents_to_rounded_bgr_uint8(tiny_vae: AutoencoderKL) -> None:
    latents = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    faces = decode_latents(tiny_vae, latents)
    with torch.inference_mode():
        image = tiny_vae.decode(latents / 0.18215).sample
    rgb = ((image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    assert faces.shape == (2, 256, 256, 3) and faces.dtype == np.uint8
    np.testing.assert_array_equal(faces, rgb.numpy()[..., ::-1])


def test_it_round_trips_the_shapes_of_encode_and_decode(tiny_vae: AutoencoderKL) -> None:
    latents = encode_crops(tiny_vae, _crops(3))
    assert decode_latents(tiny_vae, latents[:, :4]).shape == (3, 256, 256, 3)


def test_it_rejects_crops_of_the_wrong_shape_or_dtype(tiny_vae: AutoencoderKL) -> None:
    with pytest.raises(ValueError, match="256, 256, 3"):
        encode_crops(tiny_vae, np.zeros((1, 128, 128, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        encode_crops(tiny_vae, np.zeros((1, 256, 256, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="latents"):
        decode_latents(tiny_vae, torch.zeros(1, 8, 32, 32))


def test_it_describes_sd_vae_ft_mse_at_full_size() -> None:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        vae = AutoencoderKL(**full_vae_config())
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert vae.config.scaling_factor == pytest.approx(0.18215)


def _float64_masked_mean(vae: AutoencoderKL, crop_bgr: np.ndarray) -> torch.Tensor:
    """Spec §4.1 in float64 with a contiguous NCHW input: (1, 4, 32, 32) scaled posterior mean."""
    reference = copy.deepcopy(vae).to(torch.float64)
    rgb = crop_bgr[:, :, ::-1].astype(np.float64) / 255.0
    rgb[128:] = 0.0
    pixels = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None] * 2 - 1
    with torch.inference_mode():
        return reference.encode(pixels).latent_dist.mean * 0.18215


def _encoder_layouts(vae: AutoencoderKL, run: Callable[[], object]) -> list[tuple[int, ...]]:
    """The strides of every Conv2d / GroupNorm input inside the encoder during ``run()``."""
    strides: list[tuple[int, ...]] = []

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        strides.append(args[0].stride())

    hooks = [
        module.register_forward_pre_hook(record)
        for module in vae.encoder.modules()
        if isinstance(module, (torch.nn.Conv2d, torch.nn.GroupNorm))
    ]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return strides


def test_it_feeds_the_encoder_contiguous_nchw_tensors(tiny_vae: AutoencoderKL) -> None:
    crops = _crops(2)
    engine = _encoder_layouts(tiny_vae, lambda: encode_crops(tiny_vae, crops))
    pixels = torch.zeros(2, 3, 256, 256)  # contiguous NCHW, as upstream builds its input
    with torch.inference_mode():
        upstream = _encoder_layouts(tiny_vae, lambda: tiny_vae.encode(pixels))
    assert engine[0] == pixels.stride()  # conv_in sees NCHW, not a channels_last view
    # Every layer then sees the layout diffusers gives an NCHW input (its mid-block attention
    # hands back channels_last strides on its own, upstream as here), twice: masked and full.
    assert engine == upstream + upstream


def test_its_posterior_mean_matches_a_float64_run(tiny_vae: AutoencoderKL) -> None:
    crops = _crops(2, seed=3)
    latents = encode_crops(tiny_vae, crops)
    for index in range(2):
        expected = _float64_masked_mean(tiny_vae, crops[index]).float()
        error = (latents[index : index + 1, :4] - expected).abs().max().item()
        assert error <= 1e-5, error
