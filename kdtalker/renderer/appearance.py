"""Appearance feature extractor F: source image (B, 3, 256, 256) in [0, 1] -> feature volume f_s (B, 32, 16, 64, 64)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdtalker.renderer.layers import ConvNormAct


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(ReLU(norm2(conv1(ReLU(norm1(x))))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels, affine=True)
        self.norm2 = nn.BatchNorm3d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        return x + y


class AppearanceFeatureExtractor(nn.Module):
    """2-D encoder (conv-BN-ReLU, 2 pooled down blocks, 1x1 conv) folded into a volume, then 3-D residual blocks."""

    def __init__(
        self,
        image_channel: int = 3,
        block_expansion: int = 64,
        num_down_blocks: int = 2,
        max_features: int = 512,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        num_resblocks: int = 6,
    ):
        super().__init__()
        self.first = ConvNormAct(2, image_channel, block_expansion)
        widths = [min(max_features, block_expansion * 2**i) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(ConvNormAct(2, widths[i], widths[i + 1]) for i in range(num_down_blocks))
        self.second = nn.Conv2d(widths[-1], max_features, kernel_size=1)
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 32, 16, H/4, W/4); channel c*16 + d of the 2-D map becomes (c, d)."""
        x = self.first(image)
        for block in self.down_blocks:
            x = F.avg_pool2d(block(x), kernel_size=2)
        x = self.second(x)
        b, _, h, w = x.shape
        return self.resblocks_3d(x.view(b, self.reshape_channel, self.reshape_depth, h, w))
