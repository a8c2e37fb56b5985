"""Face-vid2vid's motion layout and the driving keypoints of a motion vector around the canonical keypoints.

(T, 51) = [yaw, pitch, roll (degrees), t (3), exp (15 x 3)]: the head-pose/expression estimator's outputs, the pose
bins taken to degrees. Face-vid2vid has no scale. Its 15 keypoints are learnt without names, so no lip or eye
region is defined (the whole expression is one region).
"""

from __future__ import annotations

import torch

from kdtalker.facevid2vid.keypoints import transform_keypoints
from kdtalker.motion_layout import MotionLayout

FACEVID2VID_LAYOUT = MotionLayout(
    name="facevid2vid",
    parts=(("yaw", 1), ("pitch", 1), ("roll", 1), ("t", 3), ("exp", 45)),
    num_kp=15,
    smoothed=("yaw", "pitch", "roll", "t", "exp"),
)


def driving_keypoints(canonical: torch.Tensor, motion: torch.Tensor, translation_axes: tuple[int, ...]) -> torch.Tensor:
    """canonical kp (1 or T, 15, 3), motion (T, 51) -> driving kp (T, 15, 3) = R kp + t + exp.

    translation_axes: the axes of t that move the keypoints; SadTalker's renderer keeps only y ((1,)), the
    re-implementation all three ((0, 1, 2)). The others are zeroed.
    """
    parts = FACEVID2VID_LAYOUT.unpack(motion)
    keep = torch.zeros(3, dtype=motion.dtype, device=motion.device)
    keep[list(translation_axes)] = 1
    return transform_keypoints(canonical, parts["yaw"], parts["pitch"], parts["roll"], parts["t"] * keep, parts["exp"])
