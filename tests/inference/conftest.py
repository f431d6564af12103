"""Tiny random models for the inference tests (seconds on CPU, never real weights)."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL

from inference.config import PROFILE_RANDOM_TINY, EngineConfig
from inference.models import MuseTalkModels, load_models
from inference.vae import tiny_vae_config


@pytest.fixture(scope="session")
def tiny_vae() -> AutoencoderKL:
    """A seeded random tiny ``AutoencoderKL``: 256x256 RGB <-> (4,32,32), fp32 on the CPU."""
    torch.manual_seed(0)
    vae = AutoencoderKL(**tiny_vae_config())
    vae.eval().requires_grad_(False)
    return vae


@pytest.fixture(scope="session")
def tiny_models() -> MuseTalkModels:
    """The ``random-tiny`` profile (seed 0) on the CPU in fp32: UNet, VAE, whisper encoder, PE."""
    return load_models(EngineConfig(profile=PROFILE_RANDOM_TINY, seed=0))
