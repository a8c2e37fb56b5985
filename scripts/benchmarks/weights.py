"""Official-layout weight files from randomly initialised modules: speed does not depend on the weights' values.

The files have the official names, key layouts and sizes, so the pipeline loads them through its real loaders;
the pictures they make are meaningless.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from kdtalker.audio import AudioEncoder
from kdtalker.diffusion import Denoiser
from kdtalker.renderer import AppearanceFeatureExtractor, MotionExtractor, SPADEDecoder, WarpingNetwork
from kdtalker.renderer.checkpoints import BASE_FILES, STITCHING_ENTRIES, STITCHING_FILE
from kdtalker.renderer.stitching import StitchingRetargetingNetwork

REPO = Path(__file__).resolve().parents[2]


def write_random_checkpoints(root: Path, seed: int = 0) -> Path:
    """Write every file `check_checkpoint_dir` asks for under `root` (norm.npz: the repository's) -> root."""
    torch.manual_seed(seed)
    modules = {
        "appearance_feature_extractor": AppearanceFeatureExtractor(),
        "motion_extractor": MotionExtractor(),
        "warping_module": WarpingNetwork(),
        "spade_generator": SPADEDecoder(),
    }
    for name, module in modules.items():
        path = root / "liveportrait" / BASE_FILES[name]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(module.state_dict(), path)
    stitching = {
        entry: StitchingRetargetingNetwork(**sizes).state_dict() for entry, (_, sizes) in STITCHING_ENTRIES.items()
    }
    (root / "liveportrait" / STITCHING_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.save(stitching, root / "liveportrait" / STITCHING_FILE)
    audio = {f"module.audio_encoder.{k}": v for k, v in AudioEncoder().state_dict().items()}
    torch.save({"state_dict": audio, "global_step": 0}, root / "wav2lip.pth")
    Denoiser().save_pretrained(root / "KDTalker.pth")
    shutil.copyfile(REPO / "checkpoints" / "norm.npz", root / "norm.npz")
    return root
