"""Shared helpers for reading the official weight files: clear errors instead of tracebacks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from kdtalker.errors import CheckpointError
from kdtalker.safeload import load_untrusted


def load_torch_file(path: str | os.PathLike, what: str) -> Any:
    """Read a weight file on CPU without running anything in it; one clear CheckpointError for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what}: weight file {path} not found (see checkpoints/README.md for where to get it)")
    return load_untrusted(path, what)


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove `prefix` from every key that starts with it; other keys are kept unchanged."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_state_strict(
    module: nn.Module, state: Mapping[str, Any], what: str, source: str = "", assign: bool = False
) -> nn.Module:
    """load_state_dict(strict=True) with a short message naming missing/unexpected keys and shape mismatches.

    assign=True: the module takes the state's tensors themselves (a module built on the meta device: `built_empty`).
    """
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(
            f"{what}: {source or 'the checkpoint'} does not hold a state dict (got {type(state).__name__})"
        )
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
    module.load_state_dict(state, strict=True, assign=assign)
    return module


def built_empty(build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` on the meta device: no memory and no random initialisation, for weights that a checkpoint replaces
    whole (`load_state_strict(..., assign=True)`); the random init of the large renderer networks costs ~1 s a load."""
    with torch.device("meta"):
        return build()
