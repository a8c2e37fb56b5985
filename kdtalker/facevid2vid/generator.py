"""Face-vid2vid occlusion-aware SPADE generator: source image + source/driving keypoints -> image (B, 3, 256, 256).

Encoder: the same appearance network as LivePortrait's (conv-BN-ReLU, two pooled down blocks, 1x1 conv to 512,
folded into a (32, 16, 64, 64) volume, six 3-D residual blocks). Dense motion: LivePortrait's network with 15
keypoints, mask weights below `mask_floor` zeroed before blending (SadTalker's inference code does; 0 = the
re-implementation's behaviour). The volume is sampled with the dense deformation, folded to (512, 64, 64),
conv-BN-LeakyReLU(0.01) to 256, a 1x1 conv, times the occlusion map, then a SPADE decoder at 1x (six 512-channel
blocks at 64 px, up to 128 px / 256 channels, 256 px / 64 channels, conv to RGB, sigmoid).
State-dict keys are those of `generator.*` in the released files (first, down_blocks, second, resblocks_3d,
dense_motion_network, third, fourth, decoder).
"""

from __future__ import annotations

import torch
from torch import nn

from kdtalker.renderer.appearance import AppearanceFeatureExtractor
from kdtalker.renderer.layers import ConvNormAct
from kdtalker.renderer.spade import SPADEDecoder
from kdtalker.renderer.warping import DenseMotionNetwork, sample_volume


class OcclusionAwareSPADEGenerator(AppearanceFeatureExtractor):
    """G(source image, kp_driving, kp_source) -> dict(prediction, mask, occlusion_map, deformation)."""

    def __init__(
        self,
        image_channel: int,
        feature_channel: int,
        num_kp: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        reshape_channel: int,
        reshape_depth: int,
        num_resblocks: int,
        estimate_occlusion_map: bool,
        dense_motion_params: dict,
        estimate_jacobian: bool = False,
    ):
        super().__init__(
            image_channel, block_expansion, num_down_blocks, max_features, reshape_channel, reshape_depth, num_resblocks
        )
        if estimate_jacobian:
            raise ValueError("Face-vid2vid generator: the released weights use no jacobians")
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp,
            feature_channel=feature_channel,
            estimate_occlusion_map=estimate_occlusion_map,
            **dense_motion_params,
        )
        width = block_expansion * 2**num_down_blocks
        self.third = ConvNormAct(2, max_features, width, leaky=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)
        self.decoder = SPADEDecoder(
            upscale=1, max_features=max_features, block_expansion=block_expansion, num_down_blocks=num_down_blocks
        )
        self.grid_sample = "auto"  # auto | native | portable (see kdtalker.renderer.grid_sample)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Source image (B, 3, H, W) in [0, 1] -> appearance volume (B, 32, 16, H/4, W/4)."""
        return super().forward(image)

    def warp(
        self,
        volume: torch.Tensor,
        kp_driving: torch.Tensor,
        kp_source: torch.Tensor,
        compressed: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """volume (1 or B, 32, 16, h, w), kp (B, K, 3) -> dict(out (B, 256, h, w), mask, occlusion_map, deformation)."""
        dense = self.dense_motion_network(volume, kp_driving, kp_source, compressed)
        deformation = dense["deformation"]
        b, _, h, w, _ = deformation.shape
        warped = sample_volume(volume, deformation.unsqueeze(1), self.grid_sample)[:, 0]
        out = self.fourth(self.third(warped.reshape(b, -1, h, w)))
        if dense.get("occlusion_map") is not None:
            out = out * dense["occlusion_map"]
        return {**dense, "out": out}

    def forward(
        self, image: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """image (B, 3, H, W), kp_driving / kp_source (B, K, 3) -> dict(prediction (B, 3, H, W) in (0, 1), ...)."""
        out = self.warp(self.encode(image), kp_driving, kp_source)
        out["prediction"] = self.decoder(out.pop("out"))
        return out
