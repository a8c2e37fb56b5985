"""Warping module W: move the source volume f_s from the source keypoints to the driving keypoints.

A dense-motion network (hourglass over keypoint heatmaps + keypoint-translated features) predicts a
softmax mask over 22 candidate motions (background + 21 keypoint translations) and an occlusion map;
f_s is resampled with the blended motion, folded to 2-D and projected to 256 channels.

Quirks kept from the official code: the coordinate grid is corner-inclusive (2 i / (n - 1) - 1) while every
grid_sample uses align_corners=False; sparse motions are pure translations `grid - kp_d + kp_s`.
A source volume of batch 1 may drive a batch of B keypoint sets: source-only work (compress + BN + ReLU,
source heatmaps) is done once, and sampling reads the single volume instead of B copies.
Every sample goes through `grid_sample_3d`: the native 3-D grid_sample, or on backends without one (MPS) and when
asked (`grid_sample="portable"`, for export) the gather-based version of grid_sample.py, which computes the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdtalker.renderer.grid_sample import grid_sample_3d
from kdtalker.renderer.layers import ConvNormAct, conv_nearest_upsampled, polyphase_kernels

KP_VARIANCE = 0.01


def coordinate_grid(d: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(d, h, w, 3) grid of (x, y, z) in [-1, 1], corner-inclusive, with `like`'s dtype and device."""
    axes = [torch.arange(n, device=like.device).to(like.dtype) for n in (w, h, d)]
    x, y, z = (2 * (a / (n - 1)) - 1 for a, n in zip(axes, (w, h, d)))
    xx = x.view(1, 1, -1).expand(d, h, w)
    yy = y.view(1, -1, 1).expand(d, h, w)
    zz = z.view(-1, 1, 1).expand(d, h, w)
    return torch.stack([xx, yy, zz], dim=3)


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """kp (B, K, 3), grid (d, h, w, 3) -> (B, K, d, h, w) = exp(-0.5 |grid - kp|^2 / 0.01)."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * (diff**2).sum(-1) / KP_VARIANCE)


def sample_volume(volume: torch.Tensor, grids: torch.Tensor, mode: str = "auto") -> torch.Tensor:
    """volume (1 or B, C, d, h, w), grids (B, M, d', h', w', 3) -> (B, M, C, d', h', w').

    Trilinear, zero padding, align_corners=False. All M*B grids are stacked along depth so one call
    reads the volume without repeating it. mode: auto | native | portable (see grid_sample.py).
    """
    b, m, d, h, w, _ = grids.shape
    c = volume.shape[1]
    if volume.shape[0] == 1:
        out = grid_sample_3d(volume, grids.reshape(1, b * m * d, h, w, 3), mode)
        return out.view(c, b, m, d, h, w).permute(1, 2, 0, 3, 4, 5)
    out = grid_sample_3d(volume, grids.reshape(b, m * d, h, w, 3), mode)
    return out.view(b, c, m, d, h, w).permute(0, 2, 1, 3, 4, 5)


class DownBlock3d(ConvNormAct):
    """conv3d k3 p1 -> BN -> ReLU -> average pool over (1, 2, 2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(3, cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a (1, 2, 2) 3-D pool is a 2x2 pool of the (B, C*D, H, W) view; avg_pool2d also covers bfloat16 on CPU
        x = super().forward(x)
        b, c, d, h, w = x.shape
        return F.avg_pool2d(x.reshape(b, c * d, h, w), kernel_size=2).reshape(b, c, d, h // 2, w // 2)


class UpBlock3d(ConvNormAct):
    """nearest upsample by (1, 2, 2) -> conv3d k3 p1 -> BN -> ReLU.

    With the BatchNorm folded (inference) the conv runs on the low-resolution input as four phase convs of
    3 x 2 x 2 taps (`conv_nearest_upsampled`: 4/9 of the multiply-adds, same numbers up to float rounding).
    """

    def __init__(self, cin: int, cout: int):
        super().__init__(3, cin, cout)
        self._phases: dict = {}  # (dtype, device) -> polyphase groups of the folded weight
        self.fused = True  # False: the official op sequence (upsample, then the conv)

    def fold_batchnorm(self) -> None:
        super().fold_batchnorm()
        self._phases = {}

    def _drop_folded(self, *args, **kwargs) -> None:
        super()._drop_folded()
        self._phases = {}

    @torch.no_grad()
    def prepare(self) -> None:
        """Build the polyphase kernels of the folded weight now (a trace or compile then only reads them)."""
        self._phases = {}
        if self.folded_weight is not None:
            weight = self.folded_weight
            self._phases[(weight.dtype, weight.device)] = polyphase_kernels(weight, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.folded_weight
        if weight is None or not self.fused or self.training or torch.is_grad_enabled():
            return super().forward(F.interpolate(x, scale_factor=(1, 2, 2)))
        key = (weight.dtype, weight.device)
        if key not in self._phases:
            self._phases = {key: polyphase_kernels(weight, 2)}
        return F.relu(conv_nearest_upsampled(x, self._phases[key], self.folded_bias, 2, weight.shape[0]))


class HourglassEncoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        widths = [in_features] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down_blocks = nn.ModuleList(DownBlock3d(widths[i], widths[i + 1]) for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            cin = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(UpBlock3d(cin, min(max_features, block_expansion * 2**i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        x = skips.pop()
        for block in self.up_blocks:
            x = torch.cat([block(x), skips.pop()], dim=1)
        return F.relu(self.norm(self.conv(x)))


class Hourglass(nn.Module):
    """3-D U-Net that pools/upsamples only H and W; output = input channels + block_expansion."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class DenseMotionNetwork(nn.Module):
    """Predicts the dense deformation (B, d, h, w, 3) and the occlusion map (B, 1, h, w) from f_s and keypoints."""

    def __init__(
        self,
        block_expansion: int = 32,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_kp: int = 21,
        feature_channel: int = 32,
        reshape_depth: int = 16,
        compress: int = 4,
        estimate_occlusion_map: bool = True,
        mask_floor: float = 0.0,
    ):
        super().__init__()
        self.num_kp = num_kp
        # Face-vid2vid as SadTalker runs it zeroes mask weights below 1e-3 before blending; LivePortrait does not
        self.mask_floor = mask_floor
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )
        self.grid_sample = "auto"  # auto | native | portable; the renderer sets it from its config

    def compress_source(self, feature: torch.Tensor) -> torch.Tensor:
        """f_s (B, 32, d, h, w) -> ReLU(BN(compress(f_s))) (B, 4, d, h, w); source-only."""
        return F.relu(self.norm(self.compress(feature)))

    def forward(
        self,
        feature: torch.Tensor,
        kp_driving: torch.Tensor,
        kp_source: torch.Tensor,
        compressed: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """feature (1 or B, 32, d, h, w), kp (B, K, 3) -> dict(mask, deformation (B, d, h, w, 3), occlusion_map).

        Keypoint math (grid, translations, Gaussians, the softmax over motions, the blended deformation) runs in
        float32 whatever the features' dtype; only the hourglass input and the sampling grids take that dtype.
        """
        b = kp_driving.shape[0]
        _, _, d, h, w = feature.shape
        if compressed is None:
            compressed = self.compress_source(feature)
        kp_driving, kp_source = kp_driving.float(), kp_source.float()
        grid = coordinate_grid(d, h, w, kp_driving)
        kp_source = kp_source.expand(b, -1, -1)
        # motion 0 is the identity (background); motion k+1 translates keypoint k from driving to source
        translated = grid[None, None] - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
        sparse_motion = torch.cat([grid[None, None].expand(b, 1, d, h, w, 3), translated], dim=1)
        deformed = sample_volume(compressed, sparse_motion, self.grid_sample)  # (B, K+1, 4, d, h, w)
        heat = keypoint_gaussians(kp_driving, grid) - keypoint_gaussians(kp_source, grid)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).unsqueeze(2)
        hourglass_in = torch.cat([heat.to(deformed.dtype), deformed], dim=2).reshape(b, -1, d, h, w)
        prediction = self.hourglass(hourglass_in)
        mask = F.softmax(self.mask(prediction).float(), dim=1)
        weights = mask.masked_fill(mask < self.mask_floor, 0.0) if self.mask_floor > 0 else mask
        deformation = (sparse_motion.permute(0, 1, 5, 2, 3, 4) * weights.unsqueeze(2)).sum(dim=1)
        out = {"mask": mask, "deformation": deformation.permute(0, 2, 3, 4, 1)}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))
        return out


class WarpingNetwork(nn.Module):
    """W(f_s, kp_driving, kp_source) -> dict(out (B, 256, h, w), deformation, occlusion_map). Note: driving first."""

    def __init__(
        self,
        num_kp: int = 21,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        estimate_occlusion_map: bool = True,
        dense_motion_params: dict | None = None,
        flag_use_occlusion_map: bool = True,
    ):
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp,
            feature_channel=reshape_channel,
            estimate_occlusion_map=estimate_occlusion_map,
            **(dense_motion_params or {}),
        )
        width = block_expansion * 2**num_down_blocks
        self.third = ConvNormAct(2, max_features, width, leaky=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)
        self.flag_use_occlusion_map = flag_use_occlusion_map
        self.grid_sample = "auto"  # auto | native | portable; the renderer sets it (and the dense motion network's)

    def forward(
        self,
        feature_3d: torch.Tensor,
        kp_driving: torch.Tensor,
        kp_source: torch.Tensor,
        compressed: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """feature_3d (1 or B, 32, 16, 64, 64), kp_driving (B, 21, 3), kp_source (1 or B, 21, 3).

        `compressed` may carry the source-only dense_motion_network.compress_source(feature_3d).
        """
        dense = self.dense_motion_network(feature_3d, kp_driving, kp_source, compressed)
        deformation = dense["deformation"]
        b, d, h, w, _ = deformation.shape
        warped = sample_volume(feature_3d, deformation.unsqueeze(1), self.grid_sample)[:, 0]  # (B, 32, d, h, w)
        out = self.fourth(self.third(warped.reshape(b, -1, h, w)))
        occlusion_map = dense.get("occlusion_map")
        if self.flag_use_occlusion_map and occlusion_map is not None:
            out = out * occlusion_map
        return {"occlusion_map": occlusion_map, "deformation": deformation, "out": out}
