"""Stitching and eye/lip retargeting MLPs, and how their outputs are applied to keypoints.

Checkpoint entries -> wrapper names: retarget_shoulder = stitching (126 -> 65), retarget_mouth = lip
(65 -> 63), retarget_eye = eye (66 -> 63).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class StitchingRetargetingNetwork(nn.Module):
    """MLP: (Linear -> ReLU) per hidden size, then Linear; keys mlp.0, mlp.2, ..."""

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], output_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_size
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        layers.append(nn.Linear(width, output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, input_size) -> (B, output_size)."""
        return self.mlp(x)


def stitching_input(kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
    """(B, 21, 3) x 2 -> (B, 126): source then driving, flattened keypoint-major."""
    b = kp_source.shape[0]
    return torch.cat([kp_source.reshape(b, -1), kp_driving.reshape(b, -1)], dim=1)


def apply_stitching(kp_source: torch.Tensor, kp_driving: torch.Tensor, stitching: nn.Module | None) -> torch.Tensor:
    """Driving kp (B, 21, 3) + per-keypoint offsets (first 63 outputs) + one (tx, ty) shift (last 2) for all keypoints.

    Returns kp_driving unchanged when no stitching network is given (as the official wrapper does).
    """
    if stitching is None:
        return kp_driving
    b, k = kp_source.shape[:2]
    delta = stitching(stitching_input(kp_source, kp_driving))
    out = kp_driving + delta[:, : 3 * k].reshape(b, k, 3)
    shift = torch.cat([delta[:, 3 * k : 3 * k + 2], delta.new_zeros(b, 1)], dim=1)
    return out + shift.reshape(b, 1, 3)


def ratio_input(kp_source: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """kp (B, 21, 3) and ratio (B, R) -> (B, 63 + R) MLP input."""
    b = kp_source.shape[0]
    return torch.cat([kp_source.reshape(b, -1), ratio.reshape(b, -1)], dim=1)


def retarget_eye(kp_source: torch.Tensor, eye_ratio: torch.Tensor, eye: nn.Module) -> torch.Tensor:
    """kp (B, 21, 3), [src left, src right, driving] eye ratios (B, 3) -> keypoint delta (B, 21, 3)."""
    return eye(ratio_input(kp_source, eye_ratio)).reshape(kp_source.shape[0], -1, 3)


def retarget_lip(kp_source: torch.Tensor, lip_ratio: torch.Tensor, lip: nn.Module) -> torch.Tensor:
    """kp (B, 21, 3), [src, driving] lip ratios (B, 2) -> keypoint delta (B, 21, 3)."""
    return lip(ratio_input(kp_source, lip_ratio)).reshape(kp_source.shape[0], -1, 3)
