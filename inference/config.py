from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PROFILE_MUSETALK_V15 = "musetalk-v15"
PROFILE_RANDOM_FULL = "random-full"
PROFILE_RANDOM_TINY = "random-tiny"
PROFILES = (PROFILE_MUSETALK_V15, PROFILE_RANDOM_FULL, PROFILE_RANDOM_TINY)
RANDOM_PROFILES = (PROFILE_RANDOM_FULL, PROFILE_RANDOM_TINY)

# Files the musetalk-v15 profile cannot run without, relative to MODELS_DIR (spec §2).
UNET_WEIGHTS = "musetalkV15/unet.pth"
UNET_CONFIG = "musetalkV15/musetalk.json"
VAE_DIR = "sd-vae"
WHISPER_DIR = "whisper"


def _required_files() -> list[tuple[str, ...]]:
    """Each entry lists alternatives (relative to MODELS_DIR); any one of them satisfies it."""
    return [
        (UNET_WEIGHTS,),
        (UNET_CONFIG,),
        (f"{VAE_DIR}/config.json",),
        (
            f"{VAE_DIR}/diffusion_pytorch_model.bin",
            f"{VAE_DIR}/diffusion_pytorch_model.safetensors",
        ),
        (f"{WHISPER_DIR}/config.json",),
        (f"{WHISPER_DIR}/pytorch_model.bin", f"{WHISPER_DIR}/model.safetensors"),
        (f"{WHISPER_DIR}/preprocessor_config.json",),
    ]


def missing_weights(models_dir: Path) -> list[str]:
    """The required ``musetalk-v15`` files absent from ``models_dir`` (empty when complete).

    Only checks that the files exist, so it stays free of torch: the launcher calls it too.
    """
    missing: list[str] = []
    for alternatives in _required_files():
        if not any((models_dir / name).is_file() for name in alternatives):
            extra = "".join(f" (or {Path(alt).name})" for alt in alternatives[1:])
            missing.append(alternatives[0] + extra)
    return missing


@dataclass(frozen=True)
class EngineConfig:
    """How the resident engine is built.

    ``device`` is ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; fp16 is used on CUDA, fp32 on CPU.
    """

    profile: str = PROFILE_RANDOM_TINY
    models_dir: Path = Path("models")
    device: str = "cpu"
    seed: int = 0
    num_threads: int = 0  # 0: leave torch's default

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown model profile {self.profile!r}; expected one of {PROFILES}")

    @property
    def is_random(self) -> bool:
        return self.profile in RANDOM_PROFILES

    @property
    def use_fp16(self) -> bool:
        return self.device.startswith("cuda")


@dataclass(frozen=True)
class PrepareConfig:
    """Avatar preparation parameters (spec §6, §7; v1.5 defaults)."""

    bbox_shift: int = 0
    extra_margin: int = 10
    batch_size: int = 20
    fps: int = 25
    parsing_mode: str = "jaw"
    left_cheek_width: int = 90
    right_cheek_width: int = 90
    upper_boundary_ratio: float = 0.5
    expand: float = 1.5
    blur_factor: float = 0.1  # real-time script value (spec §7.3 step 5)
    max_frames: int = 0  # 0: every frame of the video
    idle_video: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.fps < 1:
            raise ValueError(f"fps must be >= 1, got {self.fps}")
        if self.parsing_mode not in ("jaw", "raw", "neck"):
            raise ValueError(f"unknown parsing_mode {self.parsing_mode!r}")


@dataclass(frozen=True)
class GenerateConfig:
    """Per-utterance generation parameters."""

    batch_size: int = 8
    fps: int = 25
    audio_padding_left: int = 2
    audio_padding_right: int = 2
    chunk_seconds: float = 0.0  # 0: not chunked
    crf: int = 18
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.fps < 1:
            raise ValueError(f"fps must be >= 1, got {self.fps}")
