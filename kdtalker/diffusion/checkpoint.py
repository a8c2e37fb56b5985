"""The official KDTalker.pth layout: {'model': state dict under 'point_model.model.', 'model_ema': {} or EMA, ...}.

Key maps only; loading onto the model is `Denoiser.from_pretrained` / `save_pretrained`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kdtalker.errors import CheckpointError
from kdtalker.fileio import atomic_path
from kdtalker.weights import load_torch_file, strip_prefix

KEY_PREFIX = "point_model.model."
WHAT = "KDTalker diffusion model"


def _ema_state(ckpt: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """A non-empty 'model_ema' entry: either a plain state dict or a torch_ema state (shadow_params in model order)."""
    ema = ckpt.get("model_ema")
    if not ema:
        raise CheckpointError(
            f"{WHAT}: {source} has no EMA weights (its 'model_ema' entry is missing or empty); use ema=False"
        )
    if "shadow_params" not in ema:
        return dict(ema)
    # torch_ema keeps one shadow tensor per model.parameters() entry, in that order: the state dict's keys without
    # the freq_bands buffer, the shared rotary frequencies counted once (at their first layer).
    state = dict(ckpt["model"])
    names, seen_freqs = [], False
    for key in state:
        if key.endswith("freq_bands") or (key.endswith("rotary_emb.freqs") and seen_freqs):
            continue
        seen_freqs = seen_freqs or key.endswith("rotary_emb.freqs")
        names.append(key)
    shadow = list(ema["shadow_params"])
    if len(shadow) != len(names):
        raise CheckpointError(f"{WHAT}: {source} 'model_ema' holds {len(shadow)} tensors, expected {len(names)}")
    state.update(zip(names, shadow))
    freqs = next((state[k] for k in names if k.endswith("rotary_emb.freqs")), None)
    return {k: (freqs if k.endswith("rotary_emb.freqs") else v) for k, v in state.items()}


# Official module paths -> ours: the positional layer parts get names, a ResnetBlock's `mlp.1` is its modulation.
# Longest first, so that a block's `mlp.1` is renamed before the block itself.
_LAYER_PARTS = (
    ("0.mlp.1", "res1.modulation"),
    ("1.mlp.1", "res2.modulation"),
    ("0", "res1"),
    ("1", "res2"),
    ("2", "attn"),
)


def _rules(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[re.Pattern, str], ...]:
    """(from, to) layer-part pairs -> regex rules for keys 'layers.N.<from>.' -> 'layers.N.<to>.'."""
    return tuple((re.compile(rf"^layers\.(\d+)\.{re.escape(a)}\."), rf"layers.\1.{b}.") for a, b in pairs)


_TO_OURS = _rules(_LAYER_PARTS)
_TO_OFFICIAL = _rules(tuple((b, a) for a, b in _LAYER_PARTS))


def _renamed(key: str, rules: tuple[tuple[re.Pattern, str], ...]) -> str:
    for pattern, replacement in rules:
        new, count = pattern.subn(replacement, key)
        if count:
            return new
    return key


def official_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Denoiser state dict -> the same tensors under the official key names (no prefix), same order."""
    return {_renamed(k, _TO_OFFICIAL): v for k, v in state.items()}


def denoiser_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official key names (no prefix) -> the Denoiser's, same order (keys it does not know pass unchanged)."""
    return {_renamed(k, _TO_OURS): v for k, v in state.items()}


def kdtalker_state_dict(ckpt: Any, source: str = "the checkpoint", ema: bool = False) -> dict[str, torch.Tensor]:
    """Official checkpoint dict (or a bare state dict) -> Denoiser state dict (prefix removed, our key names)."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{WHAT}: {source} is not a checkpoint dict (got {type(ckpt).__name__})")
    if "model" in ckpt:
        if not isinstance(ckpt["model"], Mapping):
            raise CheckpointError(f"{WHAT}: the 'model' entry of {source} is not a state dict - it is not KDTalker.pth")
        state = _ema_state(ckpt, source) if ema else dict(ckpt["model"])
    elif any(isinstance(k, str) and k.startswith(KEY_PREFIX) for k in ckpt):
        state = dict(ckpt)
    else:
        raise CheckpointError(
            f"{WHAT}: {source} has no 'model' entry and no '{KEY_PREFIX}*' keys - it is not KDTalker.pth"
        )
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    return denoiser_keys(strip_prefix(state, KEY_PREFIX))


def read_checkpoint(path_or_dict: str | os.PathLike | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """A KDTalker.pth path (read safely) or an already-loaded dict -> (checkpoint dict, its name for messages)."""
    if isinstance(path_or_dict, Mapping):
        return path_or_dict, "the given checkpoint dict"
    if not isinstance(path_or_dict, (str, os.PathLike)):
        raise CheckpointError(f"{WHAT}: expected a file path or a checkpoint dict, got {type(path_or_dict).__name__}")
    return load_torch_file(path_or_dict, WHAT), str(Path(path_or_dict))


def official_layout(
    state: Mapping[str, torch.Tensor], ema_state: Mapping[str, torch.Tensor] | None = None, **extra: Any
) -> dict[str, Any]:
    """Denoiser state dict(s) -> the official checkpoint dict {'model': {'point_model.model.' + key}, 'model_ema'}."""

    def prefixed(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {KEY_PREFIX + k: v.detach().cpu().clone() for k, v in official_keys(sd).items()}

    return {"model": prefixed(state), "model_ema": prefixed(ema_state) if ema_state is not None else {}, **extra}


def write_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """torch.save `ckpt` to `path` atomically (a killed run leaves no partial file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(dict(ckpt), tmp)
    return path
