"""A renderer's motion space: the named channels of the per-frame motion vector the denoiser predicts.

Each renderer defines one `MotionLayout` (LivePortrait: (T, 70) = [scale, yaw, pitch, roll, t(3), exp(21 x 3)];
Face-vid2vid: (T, 51) = [yaw, pitch, roll, t(3), exp(15 x 3)]); the denoiser's motion_dim, the smoothing channels
and the region channels follow from it. Plain data: every stage may read it, it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class MotionLayout:
    """Parts (name, channels) in vector order; num_kp implicit keypoints (exp holds num_kp x 3 offsets)."""

    name: str
    parts: tuple[tuple[str, int], ...]
    num_kp: int
    # keypoint groups a control signal can drive (indices among the num_kp keypoints)
    keypoint_regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # parts the post-hoc smoother filters (the official KDTalker path leaves the scale alone)
    smoothed: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        """Channels of one frame's motion vector (the denoiser's motion_dim)."""
        return sum(size for _, size in self.parts)

    @property
    def kp_dim(self) -> int:
        """Channels of the flattened canonical keypoints, num_kp x 3."""
        return 3 * self.num_kp

    def slice(self, part: str) -> slice:
        """Channels of one part, e.g. layout.slice("exp")."""
        start = 0
        for name, size in self.parts:
            if name == part:
                return slice(start, start + size)
            start += size
        raise KeyError(f"motion layout {self.name!r} has no part {part!r} (parts: {[n for n, _ in self.parts]})")

    def span(self, first: str, last: str) -> slice:
        """Channels from part `first` through part `last`, e.g. span("yaw", "t") = the head pose."""
        return slice(self.slice(first).start, self.slice(last).stop)

    def channels(self, parts: tuple[str, ...]) -> list[int]:
        """Channel indices of several parts, in vector order."""
        return [c for name, _ in self.parts if name in parts for c in range(*self.slice(name).indices(self.dim))]

    def expression_channels(self, keypoints: tuple[int, ...] | list[int]) -> list[int]:
        """Keypoint indices -> the channels of their expression offsets (x, y, z each)."""
        start = self.slice("exp").start
        return [start + 3 * k + c for k in keypoints for c in range(3)]

    def region_channels(self) -> dict[str, list[int]]:
        """Each keypoint region's expression channels, the remaining keypoints as 'expression', and 'pose'."""
        grouped = {k for keypoints in self.keypoint_regions.values() for k in keypoints}
        out = {name: self.expression_channels(kps) for name, kps in self.keypoint_regions.items()}
        out["expression"] = self.expression_channels([k for k in range(self.num_kp) if k not in grouped])
        out["pose"] = self.channels(("yaw", "pitch", "roll", "t"))
        return out

    def pack(self, **parts: Array) -> Array:
        """Per-frame parts by name ((..., size) or angles (...,), exp (..., num_kp, 3) too) -> (..., dim)."""
        missing = [name for name, _ in self.parts if name not in parts]
        if missing:
            raise KeyError(f"motion layout {self.name!r}: parts {missing} are missing")
        lead = parts["t"].shape[:-1]
        values = [parts[name].reshape(*lead, size) for name, size in self.parts]
        if isinstance(values[0], torch.Tensor):
            return torch.cat(values, dim=-1)
        return np.concatenate(values, axis=-1)

    def unpack(self, motion: Array) -> dict[str, Array]:
        """(..., dim) -> {part: (..., size)} views in vector order."""
        if motion.shape[-1] != self.dim:
            raise ValueError(
                f"motion layout {self.name!r} has {self.dim} channels, got a vector of shape {tuple(motion.shape)}"
            )
        return {name: motion[..., self.slice(name)] for name, _ in self.parts}


def layout_of_target(target: str) -> MotionLayout | None:
    """A renderer group's `_target_` (its class, or the class's from_checkpoints) -> the class's `layout`, or None."""
    from hydra.utils import get_method

    factory = get_method(target)
    return getattr(getattr(factory, "__self__", factory), "layout", None)
