"""Motion files: the motion a run rendered, saved as .npz (save_motion), and a saved motion read back (motion_file)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from kdtalker.diffusion import MOTION_DIM
from kdtalker.errors import ConfigError
from kdtalker.fileio import atomic_path


@dataclass
class MotionRecord:
    """What a run rendered, piece by piece on the host: motion (n, 70) and driving keypoints x_d (n, 21, 3)."""

    motion: list[torch.Tensor] = field(default_factory=list)
    x_d: list[torch.Tensor] = field(default_factory=list)

    def keep(self, motion: torch.Tensor, x_d: torch.Tensor) -> None:
        """Copy a rendered piece, motion (n, 70) and x_d (n, 21, 3), to the host."""
        self.motion.append(motion.cpu())
        self.x_d.append(x_d.cpu())


def npz_path(path: str | os.PathLike, key: str) -> Path:
    """`path` as a Path; ConfigError naming `key` unless it ends in .npz."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ConfigError(f"{key}={path} must be an .npz file")
    return path


def save_motion_file(path: str | os.PathLike, record: MotionRecord, source_info: Mapping[str, torch.Tensor]) -> Path:
    """Write what was rendered: motion (T, 70) raw [scale, yaw, pitch, roll, t(3), exp(63)], x_d (T, 21, 3), and
    the source's keypoint info as source_<name> (pitch/yaw/roll degrees, t, exp, scale, kp), atomically."""
    arrays = {"motion": torch.cat(record.motion).numpy(), "x_d": torch.cat(record.x_d).numpy()}
    for name, value in (source_info or {}).items():
        arrays[f"source_{name}"] = value.detach().float().cpu().numpy()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return Path(path)


def load_motion_file(path: str | os.PathLike) -> torch.Tensor:
    """A save_motion file (or any .npz with `motion` (T, 70), finite) -> (T, 70) float32; ConfigError otherwise."""
    path = npz_path(path, "motion_file")
    if not path.is_file():
        raise ConfigError(f"motion_file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "motion" not in data:
                raise ConfigError(
                    f"motion_file {path} has no 'motion' array (it has: {', '.join(data.files) or 'none'})"
                )
            motion = np.asarray(data["motion"])
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"motion_file {path} is not a readable .npz ({exc})") from None
    if motion.ndim != 2 or motion.shape[1] != MOTION_DIM or motion.shape[0] == 0:
        raise ConfigError(f"motion_file {path}: 'motion' must be (frames, {MOTION_DIM}), got {motion.shape}")
    if not np.issubdtype(motion.dtype, np.floating) or not np.isfinite(motion).all():
        raise ConfigError(f"motion_file {path}: 'motion' must hold finite numbers")
    return torch.from_numpy(motion.astype(np.float32))
