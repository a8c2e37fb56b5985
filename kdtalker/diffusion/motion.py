"""The 70-d motion vector [scale, yaw, pitch, roll, t(3), exp(63)] and its per-channel normalisation (norm.npz)."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kdtalker.errors import CheckpointError
from kdtalker.fileio import atomic_path
from kdtalker.motion_layout import MotionLayout

MOTION_DIM = 70
KP_DIM = 63
# (name, first channel, last channel + 1) in the order the official code concatenates them.
MOTION_LAYOUT = (("scale", 0, 1), ("yaw", 1, 2), ("pitch", 2, 3), ("roll", 3, 4), ("t", 4, 7), ("exp", 7, 70))
_AT = {name: (a, b) for name, a, b in MOTION_LAYOUT}
# Named channel groups of the layout above: the one place the numbers live.
SCALE = slice(*_AT["scale"])
ANGLES = slice(_AT["yaw"][0], _AT["roll"][1])  # yaw, pitch, roll (degrees)
TRANSLATION = slice(*_AT["t"])
POSE = slice(ANGLES.start, TRANSLATION.stop)  # head pose: angles + translation
EXPRESSION = slice(*_AT["exp"])  # the 21 x 3 expression offsets
# LivePortrait's keypoint groups (its lip and eye retargeting regions) among the 21 implicit keypoints.
LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)
EYE_KEYPOINTS = (11, 13, 15, 16, 18)
OTHER_KEYPOINTS = tuple(k for k in range(21) if k not in LIP_KEYPOINTS + EYE_KEYPOINTS)
# (name, channels) of the official norm.npz's motion entries; another renderer's layout brings its own parts.
OFFICIAL_PARTS = tuple((name, b - a) for name, a, b in MOTION_LAYOUT)

Array = np.ndarray | torch.Tensor


def _cat(parts: list[Array]) -> Array:
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts, dim=-1)
    return np.concatenate(parts, axis=-1)


def pack_motion(scale: Array, yaw: Array, pitch: Array, roll: Array, t: Array, exp: Array) -> Array:
    """Per-frame parts (..., 1) or (...,) for angles/scale, (..., 3) t, (..., 63) or (..., 21, 3) exp -> (..., 70)."""
    lead = t.shape[:-1]
    parts = [scale, yaw, pitch, roll, t, exp]
    sizes = [1, 1, 1, 1, 3, KP_DIM]
    return _cat([p.reshape(*lead, n) for p, n in zip(parts, sizes)])


def expression_channels(keypoints: tuple[int, ...] | list[int]) -> list[int]:
    """Keypoint indices -> the motion channels of their expression offsets (3 per keypoint, x y z)."""
    return [EXPRESSION.start + 3 * k + c for k in keypoints for c in range(3)]


# The facial regions a signal can drive, and their motion channels (the scale is no region's).
REGIONS = ("lips", "eyes", "expression", "pose")
REGION_CHANNELS = {
    "lips": expression_channels(LIP_KEYPOINTS),
    "eyes": expression_channels(EYE_KEYPOINTS),
    "expression": expression_channels(OTHER_KEYPOINTS),
    "pose": list(range(POSE.start, POSE.stop)),
}


def unpack_motion(m: Array) -> dict[str, Array]:
    """(..., 70) -> dict(scale (..., 1), yaw, pitch, roll (..., 1), t (..., 3), exp (..., 63)); views, no copies."""
    if m.shape[-1] != MOTION_DIM:
        raise ValueError(f"a motion vector has {MOTION_DIM} channels, got shape {tuple(m.shape)}")
    return {name: m[..., a:b] for name, a, b in MOTION_LAYOUT}


@dataclass
class MotionNorm:
    """Per-channel mean/std of the motion vector and of the canonical keypoints (the official norm.npz).

    normalize: (v - mean) / std; denormalize: v * std + mean, both float32 elementwise as the official code.
    `parts` are the motion's (name, channels) in vector order: the official 70-d layout, or a renderer's
    `MotionLayout.parts` (Face-vid2vid: 51-d, 45 keypoint channels). `extra` keeps the entries the diffusion model
    does not use (c_lip_*, c_eye_*) so that save() round-trips.
    """

    mean: np.ndarray  # (dim,)
    std: np.ndarray  # (dim,)
    kp_mean: np.ndarray  # (kp_dim,)
    kp_std: np.ndarray  # (kp_dim,)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    parts: tuple[tuple[str, int], ...] = OFFICIAL_PARTS

    @property
    def dim(self) -> int:
        """Channels of the motion vector these statistics normalise."""
        return sum(size for _, size in self.parts)

    @classmethod
    def load(cls, path: str | os.PathLike, layout: MotionLayout | None = None) -> "MotionNorm":
        """Read a norm.npz (<part>_mean/_std per part of the layout, kp_mean/_std; float32); None: the official."""
        path = Path(path)
        parts, kp_dim = (layout.parts, layout.kp_dim) if layout is not None else (OFFICIAL_PARTS, KP_DIM)
        what = "the KDTalker norm.npz" if layout is None else f"a norm.npz for the {layout.name} motion layout"
        if not path.is_file():
            raise CheckpointError(
                f"normalisation statistics {path} not found (the official file is dataset_process/norm.npz)"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise CheckpointError(f"{path} is not a readable norm.npz ({type(exc).__name__}: {exc})") from exc
        stats = {}
        for name, size in (*parts, ("kp", kp_dim)):
            for kind in ("mean", "std"):
                key = f"{name}_{kind}"
                if key not in arrays or arrays[key].size != size:
                    raise CheckpointError(
                        f"{path} is not {what}: entry {key!r} with {size} values is missing or has the wrong size"
                    )
                stats[key] = arrays[key].reshape(size).astype(np.float32)
                values = stats[key]
                bad = ~np.isfinite(values) if kind == "mean" else ~(np.isfinite(values) & (values > 0))
                if bad.any():
                    raise CheckpointError(
                        f"{path} is broken: {key} holds "
                        f"{'non-finite' if kind == 'mean' else 'zero, negative or non-finite'} "
                        f"values (at {np.flatnonzero(bad)[:5].tolist()}); normalising by it would give NaN motion - "
                        "use the official norm.npz or recompute it with scripts/compute_norm.py"
                    )
        extra = {k: v for k, v in arrays.items() if k not in stats}
        return cls(
            mean=np.concatenate([stats[f"{n}_mean"] for n, _ in parts]),
            std=np.concatenate([stats[f"{n}_std"] for n, _ in parts]),
            kp_mean=stats["kp_mean"],
            kp_std=stats["kp_std"],
            extra=extra,
            parts=tuple(parts),
        )

    @classmethod
    def fit(cls, motion: np.ndarray, kp: np.ndarray, layout: MotionLayout | None = None) -> "MotionNorm":
        """Statistics of raw motion (N, dim) and canonical kp (N, kp_dim): population std, a zero std replaced by 1."""
        parts, kp_dim = (layout.parts, layout.kp_dim) if layout is not None else (OFFICIAL_PARTS, KP_DIM)

        def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x = np.asarray(x, np.float32)
            mean, std = x.mean(axis=0), x.std(axis=0)
            std[std == 0] = 1
            return mean.astype(np.float32), std.astype(np.float32)

        mean, std = stats(np.reshape(motion, (-1, sum(size for _, size in parts))))
        kp_mean, kp_std = stats(np.reshape(kp, (-1, kp_dim)))
        return cls(mean=mean, std=std, kp_mean=kp_mean, kp_std=kp_std, parts=tuple(parts))

    def save(self, path: str | os.PathLike) -> None:
        """Write the norm.npz layout (one (n,) float32 array per part and for kp), atomically."""
        arrays = dict(self.extra)
        start = 0
        for name, size in self.parts:
            arrays[f"{name}_mean"] = self.mean[start : start + size].astype(np.float32)
            arrays[f"{name}_std"] = self.std[start : start + size].astype(np.float32)
            start += size
        arrays["kp_mean"] = self.kp_mean.astype(np.float32)
        arrays["kp_std"] = self.kp_std.astype(np.float32)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    @staticmethod
    def _like(stat: np.ndarray, x: Array) -> Array:
        if isinstance(x, torch.Tensor):
            return torch.as_tensor(stat, dtype=x.dtype, device=x.device)
        return stat.astype(x.dtype, copy=False) if np.issubdtype(x.dtype, np.floating) else stat

    def normalize(self, m: Array) -> Array:
        """Raw motion (..., dim) -> normalised (..., dim)."""
        return (m - self._like(self.mean, m)) / self._like(self.std, m)

    def denormalize(self, m: Array) -> Array:
        """Normalised motion (..., dim) -> raw motion (..., dim) (degrees for the angles)."""
        return m * self._like(self.std, m) + self._like(self.mean, m)

    def normalize_kp(self, kp: Array) -> Array:
        """Raw canonical keypoints (..., kp_dim) -> normalised (..., kp_dim)."""
        return (kp - self._like(self.kp_mean, kp)) / self._like(self.kp_std, kp)

    def denormalize_kp(self, kp: Array) -> Array:
        """Normalised canonical keypoints (..., kp_dim) -> raw (..., kp_dim)."""
        return kp * self._like(self.kp_std, kp) + self._like(self.kp_mean, kp)

    def canonical_token(self, kp: Array) -> Array:
        """Raw canonical kp (..., kp_dim) or (..., num_kp, 3) -> 'ori' token (..., dim): zeros, then normalised kp.

        Official (70-d): 7 zeros (scale, angles, t) and the 63 keypoint channels; Face-vid2vid (51-d): 6 and 45.
        """
        kp_dim = self.kp_mean.shape[0]
        if kp.shape[-1] != kp_dim:
            kp = kp.reshape(*kp.shape[:-2], kp_dim)
        kp = self.normalize_kp(kp)
        pad = self.dim - kp_dim
        zeros = (
            torch.zeros(*kp.shape[:-1], pad, dtype=kp.dtype, device=kp.device)
            if isinstance(kp, torch.Tensor)
            else np.zeros((*kp.shape[:-1], pad), kp.dtype)
        )
        return _cat([zeros, kp])
