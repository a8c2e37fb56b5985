"""Loaders for the official LivePortrait weight files (strict; one clear CheckpointError for a wrong file).

    liveportrait/base_models/appearance_feature_extractor.pth   flat state dict
    liveportrait/base_models/motion_extractor.pth               flat state dict, keys `detector.*`
    liveportrait/base_models/warping_module.pth                 flat state dict
    liveportrait/base_models/spade_generator.pth                flat, spectral-norm convs as weight_orig/_u/_v
    liveportrait/retargeting_models/stitching_retargeting_module.pth
        {"retarget_shoulder": sd, "retarget_mouth": sd, "retarget_eye": sd}; `module.` deleted from every key

Each loader takes a path or an already-loaded state dict, returns the module in eval mode on `device`/`dtype`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from kdtalker.errors import CheckpointError
from kdtalker.renderer.appearance import AppearanceFeatureExtractor
from kdtalker.renderer.motion_extractor import MotionExtractor
from kdtalker.renderer.spade import SPADEDecoder
from kdtalker.renderer.stitching import StitchingRetargetingNetwork
from kdtalker.renderer.warping import WarpingNetwork
from kdtalker.weights import built_empty, load_state_strict, load_torch_file, strip_prefix

BASE_FILES = {
    "appearance_feature_extractor": "base_models/appearance_feature_extractor.pth",
    "motion_extractor": "base_models/motion_extractor.pth",
    "warping_module": "base_models/warping_module.pth",
    "spade_generator": "base_models/spade_generator.pth",
}
STITCHING_FILE = "retargeting_models/stitching_retargeting_module.pth"
# checkpoint entry -> (wrapper name, official MLP config)
STITCHING_ENTRIES = {
    "retarget_shoulder": ("stitching", dict(input_size=126, hidden_sizes=[128, 128, 64], output_size=65)),
    "retarget_mouth": ("lip", dict(input_size=65, hidden_sizes=[128, 128, 64], output_size=63)),
    "retarget_eye": ("eye", dict(input_size=66, hidden_sizes=[256, 256, 128, 128, 64], output_size=63)),
}

PathOrState = str | os.PathLike | Mapping[str, Any]


def _read(source: PathOrState, what: str) -> tuple[Any, str]:
    if isinstance(source, Mapping):
        return source, "the given state dict"
    return load_torch_file(source, what), str(source)


def _without_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k.replace("module.", ""): v for k, v in state.items()} if isinstance(state, Mapping) else state


def _finish(module: nn.Module, device: str | torch.device, dtype: torch.dtype) -> nn.Module:
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _load_base(
    build: Callable[..., nn.Module], what: str, source: PathOrState, device, dtype, config: Mapping | None
) -> nn.Module:
    state, name = _read(source, what)
    if isinstance(state, Mapping) and any(isinstance(k, str) and k.startswith("module.") for k in state):
        state = strip_prefix(state, "module.")
    # a file's tensors are ours to take; a state dict the caller gave is copied (the module must not alias it)
    owned = not isinstance(source, Mapping)
    kwargs = dict(config or {})
    module = built_empty(lambda: build(**kwargs)) if owned else build(**kwargs)
    load_state_strict(module, state, what, name, assign=owned)
    return _finish(module, device, dtype)


def load_appearance_feature_extractor(
    source: PathOrState, device="cpu", dtype=torch.float32, config: Mapping | None = None
) -> AppearanceFeatureExtractor:
    """appearance_feature_extractor.pth -> AppearanceFeatureExtractor (eval)."""
    return _load_base(
        AppearanceFeatureExtractor, "LivePortrait appearance feature extractor", source, device, dtype, config
    )


def load_motion_extractor(
    source: PathOrState, device="cpu", dtype=torch.float32, config: Mapping | None = None
) -> MotionExtractor:
    """motion_extractor.pth -> MotionExtractor (eval)."""
    return _load_base(MotionExtractor, "LivePortrait motion extractor", source, device, dtype, config)


def load_warping_module(
    source: PathOrState, device="cpu", dtype=torch.float32, config: Mapping | None = None
) -> WarpingNetwork:
    """warping_module.pth -> WarpingNetwork (eval)."""
    return _load_base(WarpingNetwork, "LivePortrait warping module", source, device, dtype, config)


def load_spade_generator(
    source: PathOrState, device="cpu", dtype=torch.float32, config: Mapping | None = None
) -> SPADEDecoder:
    """spade_generator.pth -> SPADEDecoder (eval; spectral-norm weights from the stored u, v)."""
    return _load_base(SPADEDecoder, "LivePortrait SPADE generator", source, device, dtype, config)


def load_stitching_retargeting(
    source: PathOrState, device="cpu", dtype=torch.float32, config: Mapping | None = None
) -> nn.ModuleDict:
    """stitching_retargeting_module.pth -> ModuleDict(stitching, lip, eye) of MLPs (eval).

    config: {entry: {input_size, hidden_sizes, output_size}} per file entry (the renderer config's
    `configs.stitching_retargeting_module`); entries it leaves out keep the official sizes.
    """
    what = "LivePortrait stitching/retargeting module"
    checkpoint, name = _read(source, what)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{what}: {name} does not hold a dict of MLP state dicts (got {type(checkpoint).__name__})"
        )
    missing = [entry for entry in STITCHING_ENTRIES if entry not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{what}: {name} is not the expected file: entries {missing} are missing "
            f"(expected {list(STITCHING_ENTRIES)}; found {list(checkpoint)[:5]})"
        )
    nets = nn.ModuleDict()
    for entry, (wrapper_name, official) in STITCHING_ENTRIES.items():
        net = StitchingRetargetingNetwork(**{**official, **dict((config or {}).get(entry) or {})})
        load_state_strict(net, _without_module_prefix(checkpoint[entry]), f"{what} [{entry}]", name)
        nets[wrapper_name] = net
    return _finish(nets, device, dtype)


def liveportrait_files(liveportrait_dir: str | os.PathLike) -> dict[str, Path]:
    """Paths of the five official files under `liveportrait_dir` (the base names + 'stitching_retargeting_module')."""
    root = Path(liveportrait_dir)
    files = {name: root / rel for name, rel in BASE_FILES.items()}
    files["stitching_retargeting_module"] = root / STITCHING_FILE
    return files
