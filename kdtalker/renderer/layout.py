"""LivePortrait's motion layout: (T, 70) = [scale, yaw, pitch, roll, t(3), exp(21 x 3)] (KDTalker's official order)."""

from __future__ import annotations

from kdtalker.motion_layout import MotionLayout

LIVEPORTRAIT_LAYOUT = MotionLayout(
    name="liveportrait",
    parts=(("scale", 1), ("yaw", 1), ("pitch", 1), ("roll", 1), ("t", 3), ("exp", 63)),
    num_kp=21,
    # LivePortrait's lip and eye retargeting regions among its 21 implicit keypoints
    keypoint_regions={"lips": (6, 12, 14, 17, 19, 20), "eyes": (11, 13, 15, 16, 18)},
    smoothed=("yaw", "pitch", "roll", "t", "exp"),
)
