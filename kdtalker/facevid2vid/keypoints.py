"""Face-vid2vid keypoint math: pose bins -> degrees, rotation from (yaw, pitch, roll), kp = R kp_c + t + exp.

Quirks of the released code, kept because the weights were trained with them:
- degrees = 3 * E[bin] - 99 (LivePortrait: - 97.5);
- degrees -> radians with pi written as 3.14;
- R = Rx(pitch) Ry(yaw) Rz(roll) acting on column vectors (LivePortrait uses the transpose on row vectors).
"""

from __future__ import annotations

import torch

NUM_POSE_BINS = 66
PI_AS_WRITTEN = 3.14  # the official conversion; math.pi would turn every pose by a further 0.05 %


def headpose_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(B, 66) bin logits -> (B,) degrees: softmax expectation over the bin indices * 3 - 99."""
    idx = torch.arange(logits.shape[1], device=logits.device, dtype=logits.dtype)
    return (torch.softmax(logits, dim=1) * idx).sum(dim=1) * 3 - 99


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees, each (B,) or (B, 1) -> (B, 3, 3) = Rx(pitch) @ Ry(yaw) @ Rz(roll), for column-vector keypoints."""
    y, p, r = (a.reshape(-1) / 180 * PI_AS_WRITTEN for a in (yaw, pitch, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()], 1).reshape(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1).reshape(-1, 3, 3)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one], 1).reshape(-1, 3, 3)
    return rx @ ry @ rz


def transform_keypoints(
    kp: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor, t: torch.Tensor, exp: torch.Tensor
) -> torch.Tensor:
    """Canonical kp (B or 1, K, 3) -> posed kp (B, K, 3) = R kp + t + exp.

    yaw/pitch/roll: degrees (B,) or (B, 1); t (B, 3); exp (B, K, 3) or (B, 3K).
    """
    rot = rotation_matrix(yaw, pitch, roll)
    b = rot.shape[0]
    return kp @ rot.transpose(1, 2) + t.reshape(b, 1, 3) + exp.reshape(b, -1, 3)
