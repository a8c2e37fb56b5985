"""Loaders for the evaluation-only weight files: SyncNet, Hopenet, Inception (FID), ArcFace (CSIM).

Each takes a path (or an already loaded state dict) and raises CheckpointError naming the file and
where it comes from when it is missing or is not the expected file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from kdtalker.device import resolve_device
from kdtalker.errors import CheckpointError
from kdtalker.eval.csim import ArcFace
from kdtalker.eval.fid import FIDInceptionV3
from kdtalker.eval.hopenet import Hopenet
from kdtalker.eval.syncnet import SyncNet
from kdtalker.pipeline.face import dlib_models_dir
from kdtalker.weights import load_state_strict, load_torch_file, strip_prefix

WHERE = {
    "syncnet": "syncnet_v2.model from joonson/syncnet_python (download_model.sh)",
    "hopenet": "hopenet_robust_alpha1.pkl from natanielruiz/deep-head-pose (300W-LP, alpha 1, robust)",
    "inception": "pt_inception-2015-12-05-6726825d.pth from mseitzer/pytorch-fid releases",
    "arcface": "insightface's buffalo_l recognition model w600k_r50.onnx (the ArcFace model the tables assume)",
    "mmod": "mmod_human_face_detector.dat (dlib; also shipped in the face_recognition_models package)",
}


def _state(path_or_dict: str | os.PathLike | Mapping[str, Any], what: str) -> tuple[Mapping[str, Any], str]:
    if isinstance(path_or_dict, Mapping):
        return path_or_dict, "the given state dict"
    path = Path(path_or_dict)
    if not path.is_file():
        raise CheckpointError(
            f"{what}: weight file {path} not found; it needs {WHERE[what]} "
            "(set its path in kdtalker/configs/evaluate.yaml)"
        )
    return load_torch_file(path, what), str(path)


def _load_allowing_counters(
    module: nn.Module, state: Mapping[str, Any], what: str, source: str, optional: tuple[str, ...] = ()
) -> nn.Module:
    """Strict load where BatchNorm `num_batches_tracked` counters (and `optional` prefixes) may be absent."""
    state = {k: v for k, v in state.items() if not k.startswith(optional)}
    own = module.state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    return load_state_strict(module, state, what, source)


def load_syncnet(path_or_dict: str | os.PathLike | Mapping[str, Any], device: str | torch.device = "cpu"):
    """syncnet_v2.model (flat dict, no prefix, no BN counters) -> SyncNet in eval mode."""
    state, source = _state(path_or_dict, "syncnet")
    model = _load_allowing_counters(SyncNet(), state, "syncnet", source)
    return model.to(resolve_device(device)).eval()


def load_hopenet(path_or_dict: str | os.PathLike | Mapping[str, Any], device: str | torch.device = "cpu"):
    """Official Hopenet snapshot (torchvision resnet50 keys + fc_yaw/pitch/roll [+ fc_finetune]) -> Hopenet."""
    state, source = _state(path_or_dict, "hopenet")
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if isinstance(state, Mapping):
        state = strip_prefix(state, "module.")
    has_finetune = isinstance(state, Mapping) and any(k.startswith("fc_finetune.") for k in state)
    model = _load_allowing_counters(Hopenet(finetune_head=has_finetune), state, "hopenet", source)
    return model.to(resolve_device(device)).eval()


def load_inception(path_or_dict: str | os.PathLike | Mapping[str, Any], device: str | torch.device = "cpu"):
    """pytorch-fid's pt_inception-2015-12-05-6726825d.pth (Inception3 keys, fc 1008, no AuxLogits) -> FIDInceptionV3."""
    state, source = _state(path_or_dict, "inception")
    if isinstance(state, Mapping):
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    model = _load_allowing_counters(FIDInceptionV3(), state, "inception", source)
    return model.to(resolve_device(device)).eval()


def load_arcface(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """An ArcFace recognition ONNX file -> kdtalker.eval.csim.ArcFace (CUDA provider when device is CUDA)."""
    resolved = resolve_device(device)
    providers = None
    if resolved.type == "cuda":
        # onnxruntime's CUDA provider takes GPU 0 unless told: under torchrun each rank names its own GPU
        gpu = resolved.index if resolved.index is not None else torch.cuda.current_device()
        providers = [("CUDAExecutionProvider", {"device_id": gpu}), "CPUExecutionProvider"]
    return ArcFace(path, providers=providers)


def mmod_detector_path(path: str | os.PathLike | None = None) -> Path:
    """dlib's MMOD face detector file: the given path, else the copy in face_recognition_models."""
    if path is None:
        path = dlib_models_dir() / "mmod_human_face_detector.dat"
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"mmod: face detector {path} not found; it needs {WHERE['mmod']}")
    return path
