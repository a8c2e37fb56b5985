"""Normalisation statistics over a set of shards, in the official norm.npz layout (float32, zero std -> 1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from kdtalker.data.shards import read_shard
from kdtalker.diffusion.motion import MOTION_LAYOUT, MotionNorm
from kdtalker.errors import KDTalkerError, OutputError

# norm.npz key prefix -> the shard array it is computed from, flattened per frame
_SOURCES = {"yaw": "yaw", "pitch": "pitch", "roll": "roll", "scale": "scale", "t": "t", "exp": "exp", "kp": "kp"}


class _RunningMoments:
    """Exact streaming mean / population variance per column (Chan et al. parallel update, float64)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        n, mean = x.shape[0], x.mean(0)
        m2 = ((x - mean) ** 2).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.count)


def compute_norm_stats(paths: Iterable[str | os.PathLike]) -> dict[str, np.ndarray]:
    """Shards -> {yaw,pitch,roll,scale (1,), t (3,), exp,kp (63,)}_{mean,std} float32 over all their frames."""
    moments = {k: _RunningMoments() for k in _SOURCES}
    paths = [Path(p) for p in paths]
    if not paths:
        raise KDTalkerError("no shards given to compute normalisation statistics from")
    for path in tqdm(paths, desc="norm stats", unit="clip"):
        clip = read_shard(path)
        for key, source in _SOURCES.items():
            arr = clip.motion[source]
            moments[key].update(arr.reshape(arr.shape[0], -1))
    stats: dict[str, np.ndarray] = {}
    for key, m in moments.items():
        std64 = m.std()
        # A channel that never moves (tz) is left unscaled, as the official cal_norm.py does; the tolerance
        # absorbs float rounding of the mean of a constant column.
        std = std64.astype(np.float32)
        std[std64 <= 1e-9 * np.maximum(np.abs(m.mean), 1e-30)] = 1.0
        std[std == 0] = 1.0
        stats[f"{key}_mean"] = m.mean.astype(np.float32)
        stats[f"{key}_std"] = std
    return stats


def motion_norm_from_stats(stats: dict[str, np.ndarray]):
    """compute_norm_stats output -> MotionNorm; c_lip/c_eye (unused by the model) get identity statistics."""
    names = [name for name, _, _ in MOTION_LAYOUT]
    extra = {  # the official file carries LivePortrait lip/eye ratio stats the diffusion model never reads
        "c_lip_mean": np.zeros(1, np.float32),
        "c_lip_std": np.ones(1, np.float32),
        "c_eye_mean": np.zeros(2, np.float32),
        "c_eye_std": np.ones(2, np.float32),
    }
    return MotionNorm(
        mean=np.concatenate([stats[f"{n}_mean"] for n in names]),
        std=np.concatenate([stats[f"{n}_std"] for n in names]),
        kp_mean=stats["kp_mean"],
        kp_std=stats["kp_std"],
        extra=extra,
    )


def write_norm(paths: Iterable[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Shards -> norm.npz at `out` (official keys and shapes), written atomically with MotionNorm.save.

    `out` must be neither a shard nor among them (it would be read as one next time): OutputError, before any work.
    """
    paths, out = [Path(p) for p in paths], Path(out)
    if out.suffix in (".npz", ".mat") and out.parent.resolve() in {p.parent.resolve() for p in paths}:
        raise OutputError(
            f"out={out} is in the shard folder {out.parent}: it would replace or join the shards read; "
            "write it next to that folder"
        )
    motion_norm_from_stats(compute_norm_stats(paths)).save(out)
    return Path(out)
