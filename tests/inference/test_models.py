from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from inference.audio import whisper_features
from inference.config import PROFILE_MUSETALK_V15, PROFILE_RANDOM_TINY, EngineConfig
from inference.download import download_models, weight_files
from inference.errors import InferenceError, MissingWeightsError
from inference.models import (
    MuseTalkModels,
    full_unet_config,
    full_whisper_config,
    load_models,
    missing_weights,
    predict_latents,
    save_official_layout,
)
from inference.vae import decode_latents


def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 8, 32, 32, generator=generator)
    return latents, torch.randn(batch, 50, 384, generator=generator)


def _plain_diffusers_step(
    models: MuseTalkModels, latents: torch.Tensor, audio: torch.Tensor
) -> torch.Tensor:
    """Spec §3.4 as upstream calls it: PE added, timestep tensor([0]), ``.sample``."""
    with torch.inference_mode():
        tokens = audio + models.positional_encoding
        return models.unet(latents, torch.tensor([0]), encoder_hidden_states=tokens).sample


@pytest.fixture(scope="module")
def official_dir(tiny_models: MuseTalkModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    models_dir = tmp_path_factory.mktemp("models")
    save_official_layout(tiny_models, models_dir)
    return models_dir


def test_it_builds_random_tiny_models_frozen_in_fp32_on_cpu(tiny_models: MuseTalkModels) -> None:
    info = tiny_models.describe()
    assert info["profile"] == PROFILE_RANDOM_TINY and info["is_random"] is True
    assert (info["device"], info["dtype"]) == ("cpu", "float32")
    assert set(info["params"]) == {"unet", "vae", "whisper_encoder"}
    for module in (tiny_models.unet, tiny_models.vae, tiny_models.whisper_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    assert tiny_models.whisper_encoder.config.d_model == 384
    assert tiny_models.whisper_encoder.config.max_source_positions == 1500


def test_it_seeds_the_random_weights() -> None:
    first = load_models(EngineConfig(profile=PROFILE_RANDOM_TINY, seed=3))
    again = load_models(EngineConfig(profile=PROFILE_RANDOM_TINY, seed=3))
    other = load_models(EngineConfig(profile=PROFILE_RANDOM_TINY, seed=4))
    weight = "conv_in.weight"
    assert torch.equal(first.unet.state_dict()[weight], again.unet.state_dict()[weight])
    assert not torch.equal(first.unet.state_dict()[weight], other.unet.state_dict()[weight])


def test_it_labels_random_weights_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="inference.models"):
        models = load_models(EngineConfig(profile=PROFILE_RANDOM_TINY))
    assert "RANDOM weights" in caplog.text and "NOT a real lip-sync model" in caplog.text
    assert models.is_random


def test_it_matches_the_plain_diffusers_call(tiny_models: MuseTalkModels) -> None:
    latents, audio = _inputs(1)
    predicted = predict_latents(tiny_models, latents, audio)
    assert predicted.shape == (1, 4, 32, 32)
    assert torch.equal(predicted, _plain_diffusers_step(tiny_models, latents, audio))


def test_it_matches_the_plain_diffusers_call_for_a_batch(tiny_models: MuseTalkModels) -> None:
    # diffusers embeds the timestep per batch row; a 1-row vs 4-row matmul rounds differently.
    latents, audio = _inputs(4, seed=1)
    predicted = predict_latents(tiny_models, latents, audio)
    expected = _plain_diffusers_step(tiny_models, latents, audio)
    torch.testing.assert_close(predicted, expected, atol=1e-5, rtol=1e-4)
    single = predict_latents(tiny_models, latents[2:3], audio[2:3])
    torch.testing.assert_close(predicted[2:3], single, atol=1e-5, rtol=1e-4)


def test_it_caches_the_time_embedding_of_timestep_zero(tiny_models: MuseTalkModels) -> None:
    unet = tiny_models.unet
    with torch.inference_mode():
        expected = unet.time_embedding(unet.get_time_embed(torch.zeros(1), torch.tensor([0])))
    assert torch.equal(tiny_models.time_embedding, expected)


def test_it_adds_the_positional_encoding_to_the_audio(tiny_models: MuseTalkModels) -> None:
    latents, audio = _inputs(1)
    with torch.inference_mode():
        without_pe = tiny_models.unet(latents, 0, encoder_hidden_states=audio).sample
    assert not torch.allclose(predict_latents(tiny_models, latents, audio), without_pe)


def test_it_rejects_inputs_of_the_wrong_shape(tiny_models: MuseTalkModels) -> None:
    latents, audio = _inputs(2)
    with pytest.raises(ValueError, match="latents"):
        predict_latents(tiny_models, latents[:, :4], audio)
    with pytest.raises(ValueError, match="audio"):
        predict_latents(tiny_models, latents, audio[:1])


def test_it_writes_the_official_layout_and_key_names(official_dir: Path) -> None:
    assert missing_weights(official_dir) == []
    config = json.loads((official_dir / "musetalkV15/musetalk.json").read_text())
    assert config["_class_name"] == "UNet2DConditionModel" and config["in_channels"] == 8
    unet_state = torch.load(official_dir / "musetalkV15/unet.pth", weights_only=True)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight" in unet_state
    whisper_state = torch.load(official_dir / "whisper/pytorch_model.bin", weights_only=True)
    assert "model.encoder.conv1.weight" in whisper_state
    assert (official_dir / "whisper/preprocessor_config.json").is_file()


def test_it_loads_the_official_layout_with_identical_outputs(
    tiny_models: MuseTalkModels, official_dir: Path
) -> None:
    loaded = load_models(EngineConfig(profile=PROFILE_MUSETALK_V15, models_dir=official_dir))
    assert loaded.describe()["is_random"] is False
    assert loaded.describe()["params"] == tiny_models.describe()["params"]
    latents, audio = _inputs(2)
    expected = predict_latents(tiny_models, latents, audio)
    assert torch.equal(predict_latents(loaded, latents, audio), expected)
    assert np.array_equal(
        decode_latents(loaded.vae, expected), decode_latents(tiny_models.vae, expected)
    )
    samples = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    features = whisper_features(loaded, samples)
    assert torch.equal(features, whisper_features(tiny_models, samples))


def test_it_loads_safetensors_whisper_weights(
    tiny_models: MuseTalkModels, official_dir: Path, tmp_path: Path
) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(official_dir, models_dir)
    state = torch.load(models_dir / "whisper/pytorch_model.bin", weights_only=True)
    save_file(state, models_dir / "whisper/model.safetensors")
    (models_dir / "whisper/pytorch_model.bin").unlink()
    loaded = load_models(EngineConfig(profile=PROFILE_MUSETALK_V15, models_dir=models_dir))
    for key, value in tiny_models.whisper_encoder.state_dict().items():
        assert torch.equal(loaded.whisper_encoder.state_dict()[key], value), key


def test_it_names_every_missing_file_in_one_error(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as caught:
        load_models(EngineConfig(profile=PROFILE_MUSETALK_V15, models_dir=tmp_path))
    assert len(caught.value.missing) == 7
    for path in ("musetalkV15/unet.pth", "musetalkV15/musetalk.json", "sd-vae/config.json"):
        assert path in caught.value.message
    for path in ("sd-vae/diffusion_pytorch_model.bin", "whisper/pytorch_model.bin"):
        assert path in caught.value.message
    assert "whisper/preprocessor_config.json" in caught.value.message
    assert "python manage.py download_models" in caught.value.message
    assert caught.value.permanent


def test_it_lists_only_the_files_that_are_missing(official_dir: Path, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(official_dir, models_dir)
    (models_dir / "sd-vae/diffusion_pytorch_model.bin").unlink()
    (models_dir / "musetalkV15/unet.pth").unlink()
    missing = missing_weights(models_dir)
    assert missing[0] == "musetalkV15/unet.pth"
    assert missing[1].startswith("sd-vae/diffusion_pytorch_model.bin")
    assert len(missing) == 2


def test_it_rejects_weights_that_do_not_match_the_config(
    official_dir: Path, tmp_path: Path
) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(official_dir, models_dir)
    state = torch.load(models_dir / "musetalkV15/unet.pth", weights_only=True)
    del state["conv_in.weight"]
    torch.save(state, models_dir / "musetalkV15/unet.pth")
    with pytest.raises(InferenceError, match="do not match"):
        load_models(EngineConfig(profile=PROFILE_MUSETALK_V15, models_dir=models_dir))


def test_it_describes_the_full_size_architectures() -> None:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        unet = UNet2DConditionModel(**full_unet_config())
        encoder = WhisperEncoder(full_whisper_config())
    assert sum(p.numel() for p in unet.parameters()) == 849_947_844  # spec §3.3: ~849.9 M
    assert sum(p.numel() for p in encoder.parameters()) == 8_208_384
    assert len(unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight[0]) == 384


def test_it_fails_fast_when_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InferenceError, match="cannot download .* offline"):
        download_models(tmp_path / "models", cache_dir=tmp_path / "hub-cache")
    assert not (tmp_path / "models" / "musetalkV15" / "unet.pth").exists()


def test_it_keeps_files_that_are_already_there(
    official_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = download_models(official_dir, cache_dir=tmp_path / "hub-cache")
    assert paths == [official_dir / file.target for file in weight_files()]
    assert all(not file.optional for file in weight_files())
    assert any(file.optional for file in weight_files(include_optional=True))
