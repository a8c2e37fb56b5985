"""Driving keypoints for the renderer from the source's keypoint info and the sampled (denormalised) motion.

x_d = s (x_c R + delta) + t with t_z = 0 (LivePortrait's transform), x_c the source's canonical keypoints.
absolute (official default): s = source scale (the predicted scale is ignored), R, delta, t = predicted frame.
relative: R = R_i R_0^T R_src, delta = delta_src + (delta_i - delta_0), s = s_src s_i / s_0, t = t_src + (t_i - t_0).
Another renderer (Face-vid2vid, Table 5) composes its own layout's motion (`renderer_keypoints`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from kdtalker.diffusion.motion import unpack_motion
from kdtalker.errors import ConfigError
from kdtalker.motion_layout import MotionLayout
from kdtalker.renderer.keypoints import pose_keypoints, rotation_matrix
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

MODES = ("absolute", "relative")


def driving_keypoints(
    source_info: Mapping[str, torch.Tensor | np.ndarray],
    motion: torch.Tensor | np.ndarray,
    mode: str = "absolute",
    first: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Source kp_info + raw motion (T, 70) (smoothed, scale unsmoothed) -> driving keypoints x_d (T, 21, 3) float32.

    source_info: pitch, yaw, roll (1, 1) degrees, t (1, 3), exp (1, 21, 3) or (1, 63), scale (1, 1), kp like exp.
    first: the clip's frame 0 (1, 70) that relative mode measures deltas from, when `motion` is a later piece of
    the clip (default: motion[:1]).
    """
    if mode not in MODES:
        raise ConfigError(f"motion mode {mode!r} is not one of {MODES}")
    motion = torch.as_tensor(motion)
    src = {k: torch.as_tensor(v) for k, v in source_info.items()}
    device = motion.device
    motion = motion.to(torch.float32)
    d = unpack_motion(motion)
    num = motion.shape[0]
    kp_c = src["kp"].to(device, torch.float32).reshape(1, 21, 3)
    rot = rotation_matrix(d["pitch"], d["yaw"], d["roll"])  # (T, 3, 3)
    exp = d["exp"].reshape(num, 21, 3)
    t = d["t"]
    if mode == "absolute":
        scale = src["scale"].to(device, torch.float32).reshape(1, 1, 1)
    else:
        d0 = unpack_motion(
            motion[:1] if first is None else torch.as_tensor(first).to(device, torch.float32).reshape(1, -1)
        )
        rot0 = rotation_matrix(d0["pitch"], d0["yaw"], d0["roll"])
        rot_src = rotation_matrix(*(src[k].to(device, torch.float32) for k in ("pitch", "yaw", "roll")))
        rot = rot @ rot0.transpose(1, 2) @ rot_src
        exp = src["exp"].to(device, torch.float32).reshape(1, 21, 3) + (exp - d0["exp"].reshape(1, 21, 3))
        scale = (src["scale"].to(device, torch.float32).reshape(1) * (d["scale"] / d0["scale"])).reshape(num, 1, 1)
        t = src["t"].to(device, torch.float32).reshape(1, 3) + (t - d0["t"])
    return pose_keypoints(kp_c, rot, exp, scale, t)


def renderer_keypoints(
    renderer: Any,
    layout: MotionLayout,
    source_info: Mapping[str, torch.Tensor],
    motion: torch.Tensor,
    mode: str,
    first: torch.Tensor | None,
) -> torch.Tensor:
    """Raw motion (T, dim) of the renderer's layout -> its driving keypoints (T, num_kp, 3) float32.

    LivePortrait: `driving_keypoints` above (absolute | relative). Another renderer composes its own motion around the
    source's canonical keypoints (Face-vid2vid: R kp_c + t + exp), absolute only: request.py refuses the rest.
    """
    if layout == LIVEPORTRAIT_LAYOUT:
        return driving_keypoints(source_info, motion, mode=mode, first=first)
    if mode != "absolute":
        raise ConfigError(f"motion_mode={mode} composes LivePortrait's motion; renderer={layout.name} takes absolute")
    return renderer.driving_keypoints(source_info["kp"], motion)
