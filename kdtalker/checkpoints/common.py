"""Shared helpers for reading the official weight files: clear errors instead of tracebacks."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from kdtalker.errors import CheckpointError


def load_torch_file(path: str | os.PathLike, what: str) -> Any:
    """torch.load on CPU with one clear CheckpointError for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: weight file {path} not found (see checkpoints/README.md for where to get it)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{what}: {path} could not be read as a PyTorch checkpoint ({type(exc).__name__}: {exc}); "
            "the file is truncated or not the right file - download it again"
        ) from exc


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove `prefix` from every key that starts with it; other keys are kept unchanged."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_state_strict(module: nn.Module, state: Mapping[str, Any], what: str, source: str = "") -> nn.Module:
    """load_state_dict(strict=True) with a short message naming missing/unexpected keys and shape mismatches."""
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{what}: {source or 'the checkpoint'} does not hold a state dict (got {type(state).__name__})")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {'; '.join(wrong[:3])})")
        raise CheckpointError(f"{what}: {source or 'the checkpoint'} is not the expected file: " + ", ".join(parts))
    module.load_state_dict(state, strict=True)
    return module
