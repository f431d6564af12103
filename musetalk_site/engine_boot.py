"""Builds the resident engine in a worker process from the Django settings.

Only the worker imports this module (``musetalk_site.worker`` after the process boots): it
is the one place where torch enters a Django process.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from django.conf import settings

from inference.accel import AccelOptions, options_for
from inference.config import EngineConfig
from inference.download import download_models
from inference.pipeline import Engine
from inference.profiles import DEMO_WARNING, resolve_profile
from musetalk_site.engine import requested_state

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_engine() -> tuple[Any, dict[str, Any]]:
    """Resolve the profile (``auto`` rule), load the models once, describe what loaded."""
    started = time.perf_counter()
    resolved = resolve_profile(
        settings.MUSETALK_MODEL_PROFILE, settings.MODELS_DIR, download=download_models
    )
    demo = resolved.demo or settings.MUSETALK_DEMO_MODE
    config = EngineConfig(
        profile=resolved.profile,
        models_dir=settings.MODELS_DIR,
        device=resolve_device(settings.MUSETALK_DEVICE),
    )
    engine = Engine.from_config(
        config,
        cache_max_bytes=settings.MUSETALK_CACHE_MAX_MB * 1024 * 1024,
        cache_ttl_seconds=settings.MUSETALK_CACHE_TTL_SECONDS,
        budget_bytes=settings.MUSETALK_MEMORY_BUDGET_MB * 1024 * 1024,
        max_batch=settings.MUSETALK_MAX_BATCH,
        degrade=settings.LIVE_DEGRADE,
    )
    accel = options_for(settings.MUSETALK_ACCEL, engine.models.device.type)
    if accel != AccelOptions():
        warmed = engine.accelerate(accel)
        logger.info("engine accelerated (%s), batch sizes warmed: %s", accel.label(), warmed)
    # Capacity is known (and the kernels warm) before the first stream arrives.
    calibrated = engine.calibrate()
    logger.info(
        "engine frames/s by batch size: %s", {k: round(v, 1) for k, v in calibrated.items()}
    )
    state = {
        **requested_state(),
        **engine.describe(),
        "profile": resolved.profile,
        "profile_reason": resolved.reason,
        "demo": demo,
        "device": config.device,
        "loaded": True,
        "load_seconds": round(time.perf_counter() - started, 2),
        "accel": accel.label(),
    }
    if demo:
        logger.warning("!!! %s !!!", DEMO_WARNING)
    logger.info("engine ready: %s", state)
    return engine, state
