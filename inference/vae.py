"""VAE encode/decode for 256x256 face crops (spec §4).

Encoding gives the 8-channel UNet input for one avatar frame: channels 0-3 are the crop with its
lower half blacked out, channels 4-7 the full crop (spec §4.1, pitfalls 1-3). Decoding turns
predicted 4-channel latents back into BGR uint8 faces (spec §4.2).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.models import AutoencoderKL

CROP_SIZE = 256
LATENT_SIZE = 32
DEFAULT_SCALING_FACTOR = 0.18215


def full_vae_config() -> dict:
    """``AutoencoderKL(**cfg)`` kwargs of ``stabilityai/sd-vae-ft-mse`` (spec §4)."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 256,
    }


def tiny_vae_config() -> dict:
    """A seconds-on-CPU stand-in with the same I/O: 256x256 RGB <-> 4x32x32 (ENVIRONMENT.md)."""
    config = full_vae_config()
    config.update({"block_out_channels": [16, 32, 32, 32], "layers_per_block": 1})
    config["norm_num_groups"] = 8
    return config


def scaling_factor(vae: AutoencoderKL) -> float:
    """The latent scale; sd-vae-ft-mse has none in its JSON, so diffusers' 0.18215 applies."""
    value = getattr(vae.config, "scaling_factor", None)
    return float(value) if value is not None else DEFAULT_SCALING_FACTOR


def _check_crops(crops_bgr: np.ndarray) -> None:
    expected = (CROP_SIZE, CROP_SIZE, 3)
    if crops_bgr.ndim != 4 or tuple(crops_bgr.shape[1:]) != expected:
        raise ValueError(f"crops must have shape (N, 256, 256, 3), got {crops_bgr.shape}")
    if crops_bgr.dtype != np.uint8:
        raise ValueError(f"crops must be uint8, got {crops_bgr.dtype}")


def _crops_to_pixels(
    crops_bgr: np.ndarray, vae: AutoencoderKL
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,256,256,3) BGR uint8 -> (masked, full), each (B,3,256,256) in [-1,1] on the VAE.

    Both are contiguous NCHW, as upstream's input is. A permuted view of an NHWC array has
    channels_last strides, and torch then runs the whole encoder in that memory format, whose
    CPU kernels (GroupNorm above all) round far worse: ~6e-4 off a float64 run instead of ~2e-6.
    """
    rgb = np.ascontiguousarray(crops_bgr[..., ::-1].transpose(0, 3, 1, 2))  # (B,3,256,256) RGB
    pixels = torch.from_numpy(rgb).to(vae.device).float() / 255.0
    masked = pixels.clone()
    masked[:, :, CROP_SIZE // 2 :, :] = 0.0  # lower half black: -1 after normalisation
    full = pixels * 2.0 - 1.0
    masked = masked * 2.0 - 1.0
    return masked.to(vae.dtype), full.to(vae.dtype)


def _encode_mean(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    """(B,3,256,256) -> (B,4,32,32): scaled posterior mean (deterministic, spec pitfall 18)."""
    posterior = vae.encode(pixels).latent_dist
    return posterior.mean * scaling_factor(vae)


def encode_crops(vae: AutoencoderKL, crops_bgr: np.ndarray, *, batch_size: int = 8) -> torch.Tensor:
    """crops_bgr (N,256,256,3) uint8 BGR -> latents (N,8,32,32) on ``vae.device``/``vae.dtype``.

    Channels 0-3 encode the crop with rows 128..255 set to -1 after normalisation, channels 4-7
    the full crop; ``z = scaling_factor * posterior.mean``. The mean is chosen over upstream's
    unseeded ``sample()`` so that latents are deterministic (spec §4.1, pitfall 18).
    """
    _check_crops(crops_bgr)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parts: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, len(crops_bgr), batch_size):
            masked, full = _crops_to_pixels(crops_bgr[start : start + batch_size], vae)
            parts.append(torch.cat([_encode_mean(vae, masked), _encode_mean(vae, full)], dim=1))
    if not parts:
        return torch.empty((0, 8, LATENT_SIZE, LATENT_SIZE), device=vae.device, dtype=vae.dtype)
    return torch.cat(parts, dim=0)


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> np.ndarray:
    """latents (B,4,32,32) -> faces (B,256,256,3) uint8 BGR on the CPU (spec §4.2).

    ``decode(latents / scaling_factor)``, then ``(x/2 + 0.5)`` clamped to [0,1], x255, rounded.
    """
    return np.ascontiguousarray(decode_latents_tensor(vae, latents).cpu().numpy())


def decode_latents_tensor(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """latents (B,4,32,32) -> faces (B,256,256,3) uint8 BGR on ``vae.device``.

    The maths of :func:`decode_latents`, without the copy to the CPU (for
    ``inference.device_blend.DeviceBlender``).
    """
    if latents.ndim != 4 or latents.shape[1] != 4:
        raise ValueError(f"latents must have shape (B, 4, H, W), got {tuple(latents.shape)}")
    with torch.inference_mode():
        scaled = latents.to(device=vae.device, dtype=vae.dtype) / scaling_factor(vae)
        image = vae.decode(scaled).sample.float()
        image = (image / 2 + 0.5).clamp(0, 1)
        image = (image.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    return image.flip(-1).contiguous()
