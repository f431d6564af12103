"""Which model profile the engine runs: the ``auto`` rule of the platform."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inference.config import (
    PROFILE_MUSETALK_V15,
    PROFILE_RANDOM_TINY,
    PROFILES,
    missing_weights,
)
from inference.errors import InferenceError, MissingWeightsError

logger = logging.getLogger(__name__)

PROFILE_AUTO = "auto"
DEMO_WARNING = "demo mode: random weights, output is not real lip-sync"


@dataclass(frozen=True)
class ResolvedProfile:
    profile: str
    demo: bool
    reason: str


def resolve_profile(
    requested: str,
    models_dir: Path,
    *,
    download: Callable[[Path], object] | None = None,
) -> ResolvedProfile:
    """Turn ``MUSETALK_MODEL_PROFILE`` into the profile to load.

    ``auto``: the real weights when present; otherwise try ``download`` once (it raises
    ``InferenceError`` when it cannot); when that fails (offline), demo mode on
    ``random-tiny``. Explicit profiles are returned as they are, except that ``musetalk-v15``
    with missing weights raises ``MissingWeightsError`` listing every missing file.
    Checks files only: nothing here imports torch.
    """
    if requested != PROFILE_AUTO:
        return _explicit_profile(requested, models_dir)
    if not missing_weights(models_dir):
        return ResolvedProfile(PROFILE_MUSETALK_V15, demo=False, reason="weights found")
    if download is not None:
        try:
            download(models_dir)
        except InferenceError as exc:
            logger.warning("model download impossible: %s", exc.message)
        else:
            if not missing_weights(models_dir):
                return ResolvedProfile(PROFILE_MUSETALK_V15, demo=False, reason="downloaded")
    logger.warning("!!! %s (no MuseTalk weights in %s) !!!", DEMO_WARNING, models_dir)
    return ResolvedProfile(PROFILE_RANDOM_TINY, demo=True, reason=f"no weights in {models_dir}")


def _explicit_profile(requested: str, models_dir: Path) -> ResolvedProfile:
    if requested not in PROFILES:
        raise ValueError(f"unknown model profile {requested!r}")
    if requested == PROFILE_MUSETALK_V15:
        missing = missing_weights(models_dir)
        if missing:
            raise MissingWeightsError(missing, str(models_dir))
    return ResolvedProfile(requested, demo=False, reason="set explicitly")
