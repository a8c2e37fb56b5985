"""Normalisation statistics over a set of shards, in the official norm.npz layout (float32, zero std -> 1).

The shards' own motion layout gives the entries: LivePortrait's the official ones, Face-vid2vid's {yaw, pitch, roll,
t, exp (45), kp (45)}; shards of two layouts are refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from kdtalker.data.shards import check_layout, read_shard
from kdtalker.diffusion.motion import MotionNorm
from kdtalker.errors import KDTalkerError, OutputError
from kdtalker.motion_layout import MotionLayout
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT


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
    """Shards -> {<part>, kp}_{mean,std} float32 over all their frames (LivePortrait: yaw,pitch,roll,scale (1,),
    t (3,), exp,kp (63,)); the first shard's layout is every shard's (KDTalkerError naming one that differs)."""
    return _stats(paths)[0]


def _stats(paths: Iterable[str | os.PathLike]) -> tuple[dict[str, np.ndarray], MotionLayout]:
    paths = [Path(p) for p in paths]
    if not paths:
        raise KDTalkerError("no shards given to compute normalisation statistics from")
    layout = None
    moments: dict[str, _RunningMoments] = {}
    for path in tqdm(paths, desc="norm stats", unit="clip"):
        clip = read_shard(path)
        if layout is None:
            layout = clip.layout
            moments = {name: _RunningMoments() for name in (*(n for n, _ in layout.parts), "kp")}
        check_layout(clip, layout, path, f"{paths[0]} (the first shard) holds")
        for key, m in moments.items():
            arr = clip.motion[key]
            m.update(arr.reshape(arr.shape[0], -1))
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
    return stats, layout


def motion_norm_from_stats(stats: dict[str, np.ndarray], layout: MotionLayout) -> MotionNorm:
    """compute_norm_stats output for `layout` -> MotionNorm; LivePortrait's gets identity c_lip/c_eye statistics."""
    extra = {}
    if layout == LIVEPORTRAIT_LAYOUT:
        extra = {  # the official file carries LivePortrait lip/eye ratio stats the diffusion model never reads
            "c_lip_mean": np.zeros(1, np.float32),
            "c_lip_std": np.ones(1, np.float32),
            "c_eye_mean": np.zeros(2, np.float32),
            "c_eye_std": np.ones(2, np.float32),
        }
    return MotionNorm(
        mean=np.concatenate([stats[f"{n}_mean"] for n, _ in layout.parts]),
        std=np.concatenate([stats[f"{n}_std"] for n, _ in layout.parts]),
        kp_mean=stats["kp_mean"],
        kp_std=stats["kp_std"],
        extra=extra,
        parts=layout.parts,
    )


def write_norm(paths: Iterable[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Shards -> norm.npz at `out` (official keys and shapes; the shards' layout's parts), written atomically.

    `out` must be neither a shard nor among them (it would be read as one next time): OutputError, before any work.
    """
    paths, out = [Path(p) for p in paths], Path(out)
    if out.suffix in (".npz", ".mat") and out.parent.resolve() in {p.parent.resolve() for p in paths}:
        raise OutputError(
            f"out={out} is in the shard folder {out.parent}: it would replace or join the shards read; "
            "write it next to that folder"
        )
    motion_norm_from_stats(*_stats(paths)).save(out)
    return Path(out)
