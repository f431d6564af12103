from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from inference.vae import decode_latents, encode_crops, full_vae_config, tiny_vae_config

# CPU convolutions round differently for different batch sizes (~1e-4 on these latents).
BATCH_TOLERANCE = {"atol": 3e-4, "rtol": 1e-3}


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
