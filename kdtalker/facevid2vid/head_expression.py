"""Face-vid2vid head-pose / expression estimator: image (B, 3, 256, 256) -> pose bin logits, translation, deltas.

A ResNet-50-like trunk (7x7/2 conv, 3x3/2 max pool, bottleneck stages at 256, 512, 1024, 2048 channels, each wider
stage entered through a 1x1 conv and a stride-2 bottleneck), global average pooling, then linear heads: three
66-bin head-pose classifiers, a translation (3) and the expression deltas (3 * num_kp).

Quirk kept from the official code: the head named `fc_roll` gives the *yaw* logits and `fc_yaw` the *roll* logits
(the checkpoint was trained that way; `fc_pitch` is pitch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBottleneck(nn.Module):
    """ReLU(x' + BN(1x1(ReLU(BN(3x3/s(ReLU(BN(1x1(x))))))))), x' = BN(1x1/s(x)) when strided, else x; width/4 inside."""

    def __init__(self, in_features: int, stride: int):
        super().__init__()
        mid = in_features // 4
        self.conv1 = nn.Conv2d(in_features, mid, kernel_size=1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, in_features, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(mid, affine=True)
        self.norm2 = nn.BatchNorm2d(mid, affine=True)
        self.norm3 = nn.BatchNorm2d(in_features, affine=True)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(in_features, in_features, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        skip = self.norm4(self.skip(x)) if self.stride != 1 else x
        return F.relu(out + skip)


def _stage(name: str, width: int, count: int) -> nn.Sequential:
    stage = nn.Sequential()
    for i in range(count):
        stage.add_module(f"{name}_{i}", ResBottleneck(width, stride=1))
    return stage


class HeadExpressionEstimator(nn.Module):
    """(B, 3, H, W) in [0, 1] -> dict(yaw, pitch, roll (B, num_bins) logits, t (B, 3), exp (B, 3 num_kp))."""

    def __init__(
        self,
        block_expansion: int,
        feature_channel: int,
        num_kp: int,
        image_channel: int,
        max_features: int,
        num_bins: int,
        estimate_jacobian: bool = False,
    ):
        super().__init__()
        del feature_channel, estimate_jacobian  # common parameters of the official config, unused here
        self.conv1 = nn.Conv2d(image_channel, block_expansion, kernel_size=7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(block_expansion, affine=True)
        self.conv2 = nn.Conv2d(block_expansion, 256, kernel_size=1)
        self.norm2 = nn.BatchNorm2d(256, affine=True)
        self.block1 = _stage("b1", 256, 3)
        self.conv3 = nn.Conv2d(256, 512, kernel_size=1)
        self.norm3 = nn.BatchNorm2d(512, affine=True)
        self.block2 = ResBottleneck(512, stride=2)
        self.block3 = _stage("b3", 512, 3)
        self.conv4 = nn.Conv2d(512, 1024, kernel_size=1)
        self.norm4 = nn.BatchNorm2d(1024, affine=True)
        self.block4 = ResBottleneck(1024, stride=2)
        self.block5 = _stage("b5", 1024, 5)
        self.conv5 = nn.Conv2d(1024, max_features, kernel_size=1)
        self.norm5 = nn.BatchNorm2d(max_features, affine=True)
        self.block6 = ResBottleneck(max_features, stride=2)
        self.block7 = _stage("b7", max_features, 2)
        self.fc_roll = nn.Linear(max_features, num_bins)
        self.fc_pitch = nn.Linear(max_features, num_bins)
        self.fc_yaw = nn.Linear(max_features, num_bins)
        self.fc_t = nn.Linear(max_features, 3)
        self.fc_exp = nn.Linear(max_features, 3 * num_kp)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> pooled trunk features (B, max_features)."""
        out = F.max_pool2d(F.relu(self.norm1(self.conv1(image))), kernel_size=3, stride=2, padding=1)
        out = self.block1(F.relu(self.norm2(self.conv2(out))))
        out = self.block3(self.block2(F.relu(self.norm3(self.conv3(out)))))
        out = self.block5(self.block4(F.relu(self.norm4(self.conv4(out)))))
        out = self.block7(self.block6(F.relu(self.norm5(self.conv5(out)))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> dict(yaw, pitch, roll logits (B, num_bins), t (B, 3), exp (B, 3 num_kp))."""
        out = self.features(image)
        # the official head names are swapped for yaw and roll (see the module docstring)
        return {
            "yaw": self.fc_roll(out),
            "pitch": self.fc_pitch(out),
            "roll": self.fc_yaw(out),
            "t": self.fc_t(out),
            "exp": self.fc_exp(out),
        }
