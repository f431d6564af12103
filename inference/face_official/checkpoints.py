"""Strict, pickle-free loading of the official face-model state_dicts.

The upstream code loads these files with ``torch.load`` defaults (full unpickling) and, for
S3FD, downloads the file on first use. Here a file is read with ``weights_only=True`` and must
match the module key for key and shape for shape; nothing is ever fetched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from inference.errors import InferenceError

logger = logging.getLogger(__name__)

MAX_LISTED_KEYS = 5  # keys quoted in an error message; the rest are counted

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = len(keys) - MAX_LISTED_KEYS
    return f"{shown} (+{more} more)" if more > 0 else shown


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a plain state_dict file, read on the CPU without unpickling code objects."""
    if not path.is_file():
        raise InferenceError(f"{what} weights not found at {path}", permanent=True)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or non-weights files
        raise InferenceError(
            f"{what} weights at {path} cannot be read as a plain state_dict: {exc}",
            permanent=True,
        ) from exc
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise InferenceError(f"{what} weights at {path} are not a state_dict", permanent=True)
    return dict(loaded)


def _fill_batch_counters(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Checkpoints written before PyTorch 0.4.1 lack BatchNorm ``num_batches_tracked``.

    The counter only matters for training with ``momentum=None``; eval uses the running
    statistics, so a missing counter is filled with the module's own (zero) value.
    """
    for key, value in module.state_dict().items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = value


def check_keys(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Raise a permanent InferenceError naming missing, unexpected or mis-shaped keys."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes: {_listed(wrong_shape)}")
    if problems:
        raise InferenceError(
            f"{what} weights at {path} do not match the official architecture; "
            + "; ".join(problems),
            permanent=True,
        )


def load_strict(module: ModuleT, path: Path, what: str) -> ModuleT:
    """Load ``path`` into ``module`` with an exact key and shape match; returns the module."""
    state = read_state_dict(path, what)
    _fill_batch_counters(module, state)
    check_keys(module, state, path, what)
    module.load_state_dict(state, strict=True)
    logger.info("loaded %s weights from %s (%d tensors)", what, path, len(state))
    return module
