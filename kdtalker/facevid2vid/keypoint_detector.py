"""Face-vid2vid canonical keypoint detector: image (B, 3, 256, 256) in [0, 1] -> canonical keypoints (B, 15, 3).

Anti-aliased downsampling (x0.25: a 13x13 Gaussian, sigma 1.5, then every 4th pixel), a 2-D encoder of five pooled
conv blocks to (B, 1024, 2, 2), a 1x1 conv to 16384 channels folded into a (1024, 16, 2, 2) volume, five 3-D blocks
that upsample H and W back to (32, 16, 64, 64), a 3x3x3 conv to one heatmap per keypoint; each keypoint is the
expectation of the corner-inclusive coordinate grid under softmax(heatmap / temperature) over all voxels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdtalker.renderer.layers import ConvNormAct
from kdtalker.renderer.warping import UpBlock3d, coordinate_grid


def gaussian_kernel(channels: int, scale: float) -> torch.Tensor:
    """The anti-aliasing kernel (channels, 1, k, k): sigma = (1/scale - 1) / 2, k = 2 round(4 sigma) + 1, sum 1."""
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    axis = torch.arange(size, dtype=torch.float32)
    g = torch.exp(-((axis - (size - 1) / 2) ** 2) / (2 * sigma**2))
    kernel = g[:, None] * g[None, :]
    return (kernel / kernel.sum()).expand(channels, 1, size, size).clone()


class AntiAliasDownsample(nn.Module):
    """Gaussian blur (depthwise, buffer `weight`) then keep every (1/scale)-th pixel: (B, C, H, W) -> (B, C, sH, sW)."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.register_buffer("weight", gaussian_kernel(channels, scale))
        self.step = int(1 / scale)
        size = self.weight.shape[-1]
        # an even kernel pads one less after than before (the official padding rule; the kernel here is odd)
        self.pad_before = size // 2
        self.pad_after = self.pad_before - 1 if size % 2 == 0 else self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.pad_before, self.pad_after
        out = F.conv2d(F.pad(x, (a, b, a, b)), self.weight, groups=x.shape[1])
        return out[:, :, :: self.step, :: self.step]


class DownBlock2d(ConvNormAct):
    """conv k3 p1 -> BN -> ReLU -> 2x2 average pool."""

    def __init__(self, cin: int, cout: int):
        super().__init__(2, cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(super().forward(x), kernel_size=2)


class KeypointHourglass(nn.Module):
    """2-D encoder (down0..) -> 1x1 conv -> fold channels into depth -> 3-D decoder (up0..) -> (B, 32, 16, h, w)."""

    def __init__(
        self,
        block_expansion: int,
        in_features: int,
        reshape_features: int,
        reshape_depth: int,
        num_blocks: int,
        max_features: int,
    ):
        super().__init__()
        widths = [in_features] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.down_blocks.add_module(f"down{i}", DownBlock2d(widths[i], widths[i + 1]))
        self.conv = nn.Conv2d(widths[-1], reshape_features, kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(num_blocks):
            cin = min(max_features, block_expansion * 2 ** (num_blocks - i))
            cout = min(max_features, block_expansion * 2 ** (num_blocks - i - 1))
            self.up_blocks.add_module(f"up{i}", UpBlock3d(cin, cout))
        self.reshape_depth = reshape_depth
        self.out_filters = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))
        b, c, h, w = out.shape
        return self.up_blocks(out.view(b, c // self.reshape_depth, self.reshape_depth, h, w))


class KeypointDetector(nn.Module):
    """Canonical keypoints: (B, 3, H, W) in [0, 1] -> (B, num_kp, 3) (x, y, z) in [-1, 1]; keys as `kp_extractor.*`."""

    def __init__(
        self,
        block_expansion: int,
        feature_channel: int,
        num_kp: int,
        image_channel: int,
        max_features: int,
        reshape_channel: int,
        reshape_depth: int,
        num_blocks: int,
        temperature: float,
        scale_factor: float,
        estimate_jacobian: bool = False,
    ):
        super().__init__()
        if estimate_jacobian:
            raise ValueError("Face-vid2vid keypoint detector: the released weights have no jacobian head")
        del feature_channel  # a common parameter of the official config that the detector does not use
        self.predictor = KeypointHourglass(
            block_expansion, image_channel, reshape_channel, reshape_depth, num_blocks, max_features
        )
        self.kp = nn.Conv3d(self.predictor.out_filters, num_kp, kernel_size=3, padding=1)
        self.temperature = temperature
        self.down = AntiAliasDownsample(image_channel, scale_factor) if scale_factor != 1 else None

    def heatmaps(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> softmax heatmaps (B, num_kp, 16, h, w), each summing to 1."""
        x = self.down(image) if self.down is not None else image
        logits = self.kp(self.predictor(x))
        b, k = logits.shape[:2]
        return F.softmax(logits.reshape(b, k, -1) / self.temperature, dim=2).view(logits.shape)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> canonical keypoints (B, num_kp, 3): E[grid] under each heatmap."""
        heat = self.heatmaps(image)
        d, h, w = heat.shape[2:]
        grid = coordinate_grid(d, h, w, heat)
        return (heat.unsqueeze(-1) * grid[None, None]).sum(dim=(2, 3, 4))
