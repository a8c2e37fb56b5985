"""Loaders for the Face-vid2vid weights people have (strict; one clear CheckpointError for a wrong file).

    SadTalker_V0.0.2_256.safetensors   flat safetensors: `kp_extractor.*`, `he_estimator.*`, `generator.*` (and
                                       SadTalker's other networks, ignored); read with safetensors, no pickle
    00000189-checkpoint.pth.tar        the public re-implementation's trainer checkpoint: {"kp_detector": sd,
                                       "he_estimator": sd, "generator": sd, optimizers, ...}; read with the
                                       restricted unpickler of kdtalker.safeload

Both hold the same three networks under the same inner keys; `read_states` returns them by part name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from kdtalker.errors import CheckpointError
from kdtalker.facevid2vid.generator import OcclusionAwareSPADEGenerator
from kdtalker.facevid2vid.head_expression import HeadExpressionEstimator
from kdtalker.facevid2vid.keypoint_detector import KeypointDetector
from kdtalker.weights import load_state_strict, load_torch_file

WHAT = "Face-vid2vid weights"
# part -> (prefix in the safetensors file, entry in the .pth.tar file)
PARTS = {
    "kp_detector": ("kp_extractor.", "kp_detector"),
    "he_estimator": ("he_estimator.", "he_estimator"),
    "generator": ("generator.", "generator"),
}


def _read_safetensors(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{WHAT}: weight file {path} not found (see checkpoints/README.md for where to get it)")
    try:
        flat = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{WHAT}: {path} could not be read as a safetensors file ({exc}); it is truncated or not the right file"
        ) from None
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for part, (prefix, _) in PARTS.items():
        inner = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
        if inner:
            parts[part] = inner
    return parts


def _read_pth(path: Path) -> dict[str, dict[str, Any]]:
    checkpoint = load_torch_file(path, WHAT)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{WHAT}: {path} does not hold a dict of state dicts (got {type(checkpoint).__name__})")
    return {part: checkpoint[entry] for part, (_, entry) in PARTS.items() if entry in checkpoint}


def read_states(path: str | os.PathLike) -> dict[str, Mapping[str, Any]]:
    """A .safetensors or .pth(.tar) file -> {part: state dict} for the parts it holds (kp_detector, ...)."""
    path = Path(path)
    parts = _read_safetensors(path) if path.suffix == ".safetensors" else _read_pth(path)
    if not parts:
        expected = ", ".join(f"{p}* / {e}" for p, e in PARTS.values())
        raise CheckpointError(f"{WHAT}: {path} holds none of the Face-vid2vid networks (expected {expected})")
    return parts


def _load(
    build: Callable[..., nn.Module], part: str, states: Mapping[str, Mapping], name: str, config: Mapping, device, dtype
) -> nn.Module:
    if part not in states:
        prefix, entry = PARTS[part]
        raise CheckpointError(
            f"{WHAT}: {name} has no {part} (no `{prefix}*` keys / `{entry}` entry); "
            "give a file that holds it (SadTalker's safetensors lacks the head-pose estimator in some releases: "
            "use the re-implementation's .pth.tar for it)"
        )
    module = build(**dict(config))
    load_state_strict(module, states[part], f"{WHAT} [{part}]", name)
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_networks(
    source: str | os.PathLike | Mapping[str, Mapping],
    configs: Mapping[str, Mapping],
    parts: tuple[str, ...],
    device: str | torch.device,
    dtype: torch.dtype,
) -> dict[str, nn.Module]:
    """A weight file (or {part: state dict}) -> {part: network in eval mode} for each name in `parts`.

    configs: {"common": ..., "kp_detector": ..., "he_estimator": ..., "generator": ...} as in facerender.yaml.
    """
    states, name = (
        (source, "the given state dicts") if isinstance(source, Mapping) else (read_states(source), str(source))
    )
    builders = {
        "kp_detector": KeypointDetector,
        "he_estimator": HeadExpressionEstimator,
        "generator": OcclusionAwareSPADEGenerator,
    }
    common = dict(configs["common"])
    return {
        part: _load(builders[part], part, states, name, {**common, **dict(configs[part])}, device, dtype)
        for part in parts
    }


def renderer_states(
    weights: str | os.PathLike, head_pose_weights: str | os.PathLike | None
) -> dict[str, Mapping[str, Any]]:
    """The renderer's weight file -> {part: state dict}, the head-pose/expression estimator from `head_pose_weights`
    when given (some SadTalker releases keep it only in the .pth.tar)."""
    states = dict(read_states(weights))
    if head_pose_weights is not None:
        head = read_states(head_pose_weights)
        if "he_estimator" not in head:
            raise CheckpointError(
                f"{WHAT}: head_pose_weights {head_pose_weights} holds no head-pose/expression "
                "estimator (`he_estimator.*` keys / `he_estimator` entry); name the file that has it, or null"
            )
        states["he_estimator"] = head["he_estimator"]
    return states
