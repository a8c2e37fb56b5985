"""LivePortrait keypoint math: head-pose bins to degrees, rotation matrices, x = s * (kp R + exp) + t."""

from __future__ import annotations

import math

import torch

NUM_POSE_BINS = 66


def headpose_to_degrees(pred: torch.Tensor) -> torch.Tensor:
    """(B, 66) bin logits -> (B,) degrees: softmax expectation over bin indices * 3 - 97.5.

    Any other shape is taken to be degrees already and returned unchanged (as the official wrapper does).
    """
    if pred.ndim == 2 and pred.shape[1] == NUM_POSE_BINS:
        idx = torch.arange(NUM_POSE_BINS, device=pred.device, dtype=pred.dtype)
        return torch.sum(torch.softmax(pred, dim=1) * idx, dim=1) * 3 - 97.5
    return pred


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees, each (B,) or (B, 1) -> (B, 3, 3) = (Rz(roll) @ Ry(yaw) @ Rx(pitch))^T, for row-vector keypoints."""
    p, y, r = (a.reshape(-1) / 180 * math.pi for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()], 1).reshape(-1, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], 1).reshape(-1, 3, 3)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one], 1).reshape(-1, 3, 3)
    return (rz @ ry @ rx).transpose(1, 2)


def transform_keypoints(
    kp: torch.Tensor,
    pitch: torch.Tensor,
    yaw: torch.Tensor,
    roll: torch.Tensor,
    exp: torch.Tensor,
    scale: torch.Tensor,
    t: torch.Tensor,
) -> torch.Tensor:
    """Canonical kp (B, 21, 3) or (B, 63) -> posed kp (B, 21, 3): scale * (kp @ R + exp) + [t_x, t_y, 0].

    Angles are degrees ((B,) / (B, 1)) or (B, 66) bin logits; exp like kp; scale (B, 1) or (B,); t (B, 3).
    """
    b = kp.shape[0]
    rot = rotation_matrix(headpose_to_degrees(pitch), headpose_to_degrees(yaw), headpose_to_degrees(roll))
    return pose_keypoints(kp.reshape(b, -1, 3), rot, exp.reshape(b, -1, 3), scale, t)


def pose_keypoints(
    kp: torch.Tensor, rot: torch.Tensor, exp: torch.Tensor, scale: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """LivePortrait's transform with the rotation given: scale * (kp @ R + exp) + [t_x, t_y, 0] -> (B, K, 3).

    kp, exp (B or 1, K, 3); rot (B, 3, 3); scale (B or 1) values in any shape; t (B, 3) (its z is dropped).
    """
    x = scale.reshape(-1, 1, 1) * (kp @ rot + exp)
    return x + torch.cat([t[:, :2], torch.zeros_like(t[:, 2:3])], dim=1).reshape(-1, 1, 3)


def rotation_angles(rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 3, 3) rotations as `rotation_matrix` builds them -> (pitch, yaw, roll) degrees, each (B,).

    M = R^T = Rz(roll) Ry(yaw) Rx(pitch): yaw = asin(-M20), pitch = atan2(M21, M22), roll = atan2(M10, M00)
    (unique for |yaw| < 90 degrees, which a face keeps).
    """
    m = rot.transpose(1, 2)
    yaw = torch.asin((-m[:, 2, 0]).clamp(-1, 1))
    pitch = torch.atan2(m[:, 2, 1], m[:, 2, 2])
    roll = torch.atan2(m[:, 1, 0], m[:, 0, 0])
    return tuple(a * 180 / math.pi for a in (pitch, yaw, roll))
