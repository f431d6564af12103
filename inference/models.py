"""Loading the MuseTalk v1.5 generator (UNet + VAE + whisper-tiny encoder) and the UNet step.

Three profiles (``inference.config``): ``musetalk-v15`` loads the official files from
``models_dir`` (spec §2); ``random-full`` and ``random-tiny`` build the same classes with seeded
random weights, full size or tiny, and are always labelled as not a real model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from diffusers.models import AutoencoderKL, UNet2DConditionModel
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from inference.audio import positional_encoding
from inference.config import (
    PROFILE_MUSETALK_V15,
    PROFILE_RANDOM_TINY,
    UNET_CONFIG,
    UNET_WEIGHTS,
    VAE_DIR,
    WHISPER_DIR,
    EngineConfig,
    missing_weights,
)
from inference.errors import InferenceError, MissingWeightsError
from inference.vae import full_vae_config, tiny_vae_config

logger = logging.getLogger(__name__)

AUDIO_TOKENS = 50  # 10 whisper steps x 5 hidden states per video frame (spec §5.4)
WHISPER_STATES = 5
DIFFUSERS_VERSION_TAG = "0.6.0.dev0"  # what the official musetalk.json carries (spec §3.1)


def full_unet_config() -> dict[str, Any]:
    """``UNet2DConditionModel(**cfg)`` kwargs of ``musetalkV15/musetalk.json`` (spec §3.1)."""
    return {
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 384,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 8,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    }


def tiny_unet_config() -> dict[str, Any]:
    """Same inputs/outputs as the full UNet at ~2.5 M params (ENVIRONMENT.md)."""
    config = full_unet_config()
    config.update({"block_out_channels": [32, 64, 64, 64], "layers_per_block": 1})
    config.update({"attention_head_dim": 4, "norm_num_groups": 8})
    return config


def full_whisper_config() -> WhisperConfig:
    """``openai/whisper-tiny``: d_model 384, 4 encoder layers, 6 heads, 80 mels (spec §5.3)."""
    return WhisperConfig(
        d_model=384,
        encoder_layers=4,
        encoder_attention_heads=6,
        encoder_ffn_dim=1536,
        decoder_layers=4,
        decoder_attention_heads=6,
        decoder_ffn_dim=1536,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=448,
    )


def tiny_whisper_config() -> WhisperConfig:
    """A smaller FF width; keeps d_model 384, 4 layers (5 hidden states) and a 30 s context."""
    config = full_whisper_config()
    config.encoder_ffn_dim = 256
    config.decoder_ffn_dim = 256
    config.decoder_layers = 1
    return config


@dataclass
class MuseTalkModels:
    """The resident generator: everything ``.eval()``, frozen, on ``device`` in ``dtype``.

    ``positional_encoding`` is the (50, 384) audio PE (spec §3.5) and ``time_embedding`` the
    (1, C_time) UNet time embedding at t=0, both computed once at load (spec §3.4).
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    whisper_encoder: WhisperEncoder
    feature_extractor: WhisperFeatureExtractor
    positional_encoding: torch.Tensor
    time_embedding: torch.Tensor
    device: torch.device
    dtype: torch.dtype
    profile: str

    @property
    def is_random(self) -> bool:
        return self.profile != PROFILE_MUSETALK_V15

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for logs and health endpoints."""
        return {
            "profile": self.profile,
            "is_random": self.is_random,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "params": {
                "unet": _count_params(self.unet),
                "vae": _count_params(self.vae),
                "whisper_encoder": _count_params(self.whisper_encoder),
            },
        }


def _count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load_models(config: EngineConfig) -> MuseTalkModels:
    """Build the generator for ``config.profile`` on ``config.device`` (fp16 on CUDA, fp32 on CPU).

    Raises ``MissingWeightsError`` (naming every missing file) for ``musetalk-v15`` when
    ``config.models_dir`` is incomplete.
    """
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    if config.profile == PROFILE_MUSETALK_V15:
        unet, vae, encoder, extractor = _load_official(Path(config.models_dir))
    else:
        unet, vae, encoder, extractor = _build_random(config.profile, config.seed)
    device = torch.device(config.device)
    dtype = torch.float16 if config.use_fp16 else torch.float32
    return _assemble(unet, vae, encoder, extractor, device, dtype, config.profile)


def _assemble(
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    encoder: WhisperEncoder,
    extractor: WhisperFeatureExtractor,
    device: torch.device,
    dtype: torch.dtype,
    profile: str,
) -> MuseTalkModels:
    _check_compatible(unet, encoder)
    modules: tuple[torch.nn.Module, ...] = (unet, vae, encoder)
    for module in modules:
        module.eval().requires_grad_(False).to(device=device)
        if next(module.parameters()).dtype != dtype:
            module.to(dtype=dtype)
    pe = positional_encoding(int(encoder.config.d_model))[:AUDIO_TOKENS]
    models = MuseTalkModels(
        unet=unet,
        vae=vae,
        whisper_encoder=encoder,
        feature_extractor=extractor,
        positional_encoding=pe.to(device=device, dtype=dtype),
        time_embedding=_time_embedding_at_zero(unet),
        device=device,
        dtype=dtype,
        profile=profile,
    )
    logger.info("MuseTalk models ready: %s", models.describe())
    return models


def _check_compatible(unet: UNet2DConditionModel, encoder: WhisperEncoder) -> None:
    """Reject configs the UNet step cannot run (spec §3.1, §3.4) with a clear message."""
    # diffusers types ``config`` as a dict; it is a FrozenDict whose keys are also attributes
    cfg = cast(Any, unet.config)
    problems: list[str] = []
    if cfg.in_channels != 8 or cfg.out_channels != 4:
        problems.append(f"UNet in/out channels {cfg.in_channels}/{cfg.out_channels}, expected 8/4")
    if cfg.cross_attention_dim != encoder.config.d_model:
        problems.append(
            f"UNet cross_attention_dim {cfg.cross_attention_dim} != whisper d_model "
            f"{encoder.config.d_model}"
        )
    if encoder.config.encoder_layers + 1 != WHISPER_STATES:
        problems.append(f"whisper has {encoder.config.encoder_layers} layers, expected 4")
    extras = (cfg.class_embed_type, cfg.addition_embed_type, cfg.time_embedding_act_fn)
    if any(value is not None for value in extras) or cfg.center_input_sample:
        problems.append("UNet uses class/addition embeddings or input centring (unsupported)")
    if unet.encoder_hid_proj is not None:
        problems.append("UNet has an encoder_hid_proj (unsupported)")
    if problems:
        raise InferenceError("incompatible model files: " + "; ".join(problems), permanent=True)


def _time_embedding_at_zero(unet: UNet2DConditionModel) -> torch.Tensor:
    """(1, C_time): ``time_embedding(time_proj(t=0))``, the same every call (spec §3.4)."""
    param = next(unet.parameters())
    timestep = torch.zeros(1, device=param.device)
    with torch.no_grad():
        projected = unet.time_proj(timestep).to(dtype=param.dtype)
        return unet.time_embedding(projected)


def _build_random(
    profile: str, seed: int
) -> tuple[UNet2DConditionModel, AutoencoderKL, WhisperEncoder, WhisperFeatureExtractor]:
    """Seeded random weights with the full or tiny configs (never a real model)."""
    tiny = profile == PROFILE_RANDOM_TINY
    logger.warning(
        "WARNING: profile %r builds the %s MuseTalk architecture with RANDOM weights; "
        "its output is noise, NOT a real lip-sync model.",
        profile,
        "tiny" if tiny else "full-size",
    )
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**(tiny_unet_config() if tiny else full_unet_config()))
    vae = AutoencoderKL(**(tiny_vae_config() if tiny else full_vae_config()))
    encoder = WhisperEncoder(tiny_whisper_config() if tiny else full_whisper_config())
    return unet, vae, encoder, WhisperFeatureExtractor(feature_size=80)


def _load_official(
    models_dir: Path,
) -> tuple[UNet2DConditionModel, AutoencoderKL, WhisperEncoder, WhisperFeatureExtractor]:
    """The official layout (spec §2); sizes come from the config files."""
    missing = missing_weights(models_dir)
    if missing:
        raise MissingWeightsError(missing, str(models_dir))
    unet = _load_unet(models_dir / UNET_WEIGHTS, models_dir / UNET_CONFIG)
    vae = AutoencoderKL.from_pretrained(models_dir / VAE_DIR)
    encoder = _load_whisper_encoder(models_dir / WHISPER_DIR)
    extractor = WhisperFeatureExtractor.from_pretrained(models_dir / WHISPER_DIR)
    return unet, vae, encoder, extractor


def _load_unet(weights: Path, config_path: Path) -> UNet2DConditionModel:
    """``UNet2DConditionModel(**json)`` with a strict state-dict load of ``unet.pth``."""
    kwargs = {k: v for k, v in json.loads(config_path.read_text()).items() if not k.startswith("_")}
    with torch.device("meta"):  # no random init of 850 M params that are overwritten anyway
        unet = UNet2DConditionModel(**kwargs)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    _strict_load(unet, state, str(weights))
    return unet


def _load_whisper_encoder(folder: Path) -> WhisperEncoder:
    """The encoder part of a whisper checkpoint folder (``.bin`` or ``.safetensors``)."""
    config = WhisperConfig.from_pretrained(folder)
    encoder = WhisperEncoder(config)
    weights = folder / "model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        state = load_file(weights)
    else:
        weights = folder / "pytorch_model.bin"
        state = torch.load(weights, map_location="cpu", weights_only=True)
    _strict_load(encoder, _encoder_keys(state), str(weights))
    return encoder


def _encoder_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encoder weights with their prefix stripped (``model.encoder.`` or ``encoder.``)."""
    for prefix in ("model.encoder.", "encoder."):
        found = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if found:
            return found
    return state


def _strict_load(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict ``load_state_dict``; a mismatch becomes a permanent ``InferenceError``."""
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise InferenceError(
            f"weights in {source} do not match: {error}", permanent=True
        ) from error


def predict_latents(
    models: MuseTalkModels, latents: torch.Tensor, audio: torch.Tensor
) -> torch.Tensor:
    """One UNet step at t=0 (spec §3.4): latents (B,8,32,32), audio (B,50,384) -> (B,4,32,32).

    Adds the sinusoidal PE to the audio tokens (spec §3.5). The output is the target latent
    itself, not noise; no scheduler is involved.
    """
    if latents.ndim != 4 or latents.shape[1] != 8:
        raise ValueError(f"latents must have shape (B, 8, H, W), got {tuple(latents.shape)}")
    if audio.ndim != 3 or audio.shape[0] != latents.shape[0]:
        raise ValueError(f"audio must have shape (B, 50, 384), got {tuple(audio.shape)}")
    with torch.inference_mode():
        sample = latents.to(device=models.device, dtype=models.dtype)
        tokens = audio.to(device=models.device, dtype=models.dtype) + models.positional_encoding
        emb = models.time_embedding.expand(sample.shape[0], -1)
        return _unet_forward(models.unet, sample, emb, tokens)


def _unet_forward(
    unet: UNet2DConditionModel, sample: torch.Tensor, emb: torch.Tensor, context: torch.Tensor
) -> torch.Tensor:
    """``UNet2DConditionModel.forward`` with a precomputed time embedding ``emb`` (B, C_time).

    The same block calls as diffusers' forward, minus the features MuseTalk does not use (class
    and addition embeddings, masks, adapters); ``_check_compatible`` rejects configs needing them.
    """
    upsample_factor = 2**unet.num_upsamplers
    odd_size = any(dim % upsample_factor != 0 for dim in sample.shape[-2:])
    sample = unet.conv_in(sample)
    residuals: tuple[torch.Tensor, ...] = (sample,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=context)
        else:
            sample, res = block(hidden_states=sample, temb=emb)
        residuals += res
    if unet.mid_block is not None:
        sample = unet.mid_block(sample, emb, encoder_hidden_states=context)
    for index, block in enumerate(unet.up_blocks):
        resnets = len(cast(torch.nn.ModuleList, block.resnets))
        res = residuals[-resnets:]
        residuals = residuals[:-resnets]
        is_last = index == len(unet.up_blocks) - 1
        size = residuals[-1].shape[2:] if odd_size and not is_last else None
        cross = getattr(block, "has_cross_attention", False)
        kwargs = {"encoder_hidden_states": context} if cross else {}
        sample = block(
            hidden_states=sample,
            temb=emb,
            res_hidden_states_tuple=res,
            upsample_size=size,
            **kwargs,
        )
    if unet.conv_norm_out is not None:
        sample = unet.conv_act(unet.conv_norm_out(sample))
    return unet.conv_out(sample)


def save_official_layout(models: MuseTalkModels, models_dir: Path) -> None:
    """Write ``models`` in the official ``musetalk-v15`` layout and key names (spec §2)."""
    unet_dir = models_dir / Path(UNET_WEIGHTS).parent
    unet_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in models.unet.state_dict().items()}
    torch.save(state, models_dir / UNET_WEIGHTS)
    config = {"_class_name": "UNet2DConditionModel", "_diffusers_version": DIFFUSERS_VERSION_TAG}
    config.update({k: v for k, v in models.unet.config.items() if not k.startswith("_")})
    (models_dir / UNET_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    models.vae.save_pretrained(models_dir / VAE_DIR, safe_serialization=False)
    _save_whisper(models, models_dir / WHISPER_DIR)


def _save_whisper(models: MuseTalkModels, folder: Path) -> None:
    """config.json, preprocessor_config.json and ``pytorch_model.bin`` with ``model.encoder.*`` keys
    (as in ``openai/whisper-tiny``; the decoder is never used, so it is not written)."""
    folder.mkdir(parents=True, exist_ok=True)
    models.whisper_encoder.config.save_pretrained(folder)
    models.feature_extractor.save_pretrained(folder)
    state = models.whisper_encoder.state_dict()
    weights = {f"model.encoder.{k}": v.detach().cpu().clone() for k, v in state.items()}
    torch.save(weights, folder / "pytorch_model.bin")
