"""Fetch the MuseTalk v1.5 weights from the Hugging Face Hub into the official layout (spec §2).

Files go through the Hub cache and are then linked (or copied) into ``models_dir`` under a
temporary name and renamed, so an interrupted download never leaves a half-written weight file
where ``load_models`` would find it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
)

from inference.config import UNET_CONFIG, UNET_WEIGHTS, VAE_DIR, WHISPER_DIR
from inference.errors import InferenceError

logger = logging.getLogger(__name__)

MUSETALK_REPO = "TMElyralab/MuseTalk"
VAE_REPO = "stabilityai/sd-vae-ft-mse"
WHISPER_REPO = "openai/whisper-tiny"


@dataclass(frozen=True)
class WeightFile:
    """One file: ``filename`` in the Hub repo ``repo_id`` goes to ``models_dir / target``."""

    repo_id: str
    filename: str
    target: str
    optional: bool = False


REQUIRED_FILES = (
    WeightFile(MUSETALK_REPO, UNET_WEIGHTS, UNET_WEIGHTS),
    WeightFile(MUSETALK_REPO, UNET_CONFIG, UNET_CONFIG),
    WeightFile(VAE_REPO, "config.json", f"{VAE_DIR}/config.json"),
    WeightFile(VAE_REPO, "diffusion_pytorch_model.bin", f"{VAE_DIR}/diffusion_pytorch_model.bin"),
    WeightFile(WHISPER_REPO, "config.json", f"{WHISPER_DIR}/config.json"),
    WeightFile(WHISPER_REPO, "pytorch_model.bin", f"{WHISPER_DIR}/pytorch_model.bin"),
    WeightFile(WHISPER_REPO, "preprocessor_config.json", f"{WHISPER_DIR}/preprocessor_config.json"),
)

# Upstream's avatar-preparation models (spec §2); this engine does not need them to generate.
OPTIONAL_FILES = (
    WeightFile("yzd-v/DWPose", "dw-ll_ucoco_384.onnx", "dwpose/dw-ll_ucoco_384.onnx", True),
    WeightFile(
        "ManyOtherFunctions/face-parse-bisent",
        "79999_iter.pth",
        "face-parse-bisent/79999_iter.pth",
        True,
    ),
)


def weight_files(*, include_optional: bool = False) -> list[WeightFile]:
    """The files ``download_models`` fetches: the generator, plus the face models if asked."""
    return list(REQUIRED_FILES) + (list(OPTIONAL_FILES) if include_optional else [])


def download_models(
    models_dir: Path,
    *,
    progress: Callable[[str], None] | None = None,
    include_optional: bool = False,
    cache_dir: Path | None = None,
) -> list[Path]:
    """Download every missing file into ``models_dir``; return the paths of all files.

    Files already present are kept. Raises ``InferenceError`` naming the file when the Hub
    cannot be reached; with ``HF_HUB_OFFLINE=1`` only the local Hub cache is used, so it fails
    fast with "cannot download ... offline" when a file is not cached.
    """
    paths: list[Path] = []
    for file in weight_files(include_optional=include_optional):
        destination = Path(models_dir) / file.target
        if not destination.is_file():
            if progress is not None:
                progress(f"downloading {file.repo_id}/{file.filename} -> {destination}")
            _install(_fetch(file, cache_dir), destination)
            logger.info("downloaded %s/%s to %s", file.repo_id, file.filename, destination)
        paths.append(destination)
    return paths


def _offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (the Hub library only reads it at import)."""
    value = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return value in ("1", "true", "yes", "on") or bool(constants.HF_HUB_OFFLINE)


def _fetch(file: WeightFile, cache_dir: Path | None) -> Path:
    """The file in the Hub cache, downloading it when online."""
    offline = _offline()
    try:
        cached = hf_hub_download(
            file.repo_id, file.filename, cache_dir=cache_dir, local_files_only=offline
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        reason = "offline (HF_HUB_OFFLINE is set)" if offline else "the Hub cannot be reached"
        raise InferenceError(
            f"cannot download {file.filename} from {file.repo_id}: {reason}. "
            f"Copy it to MODELS_DIR/{file.target} by hand, or retry when online."
        ) from error
    except (HfHubHTTPError, OSError) as error:
        raise InferenceError(
            f"cannot download {file.filename} from {file.repo_id}: {error}"
        ) from error
    return Path(cached)


def _install(source: Path, destination: Path) -> None:
    """Link (or copy) ``source`` to ``destination`` through a temporary name and a rename."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    real = source.resolve()  # the Hub cache's snapshot entries are symlinks to blobs
    try:
        os.link(real, partial)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(real, partial)
    os.replace(partial, destination)
