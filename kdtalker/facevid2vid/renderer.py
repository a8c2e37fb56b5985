"""FaceVid2VidRenderer: the renderer API (encode the source once, then render batches of driving keypoints).

Same calls as LivePortraitRenderer (`encode_source`, `render(source, x_d)`), with Face-vid2vid's motion layout:
the source's motion is [yaw, pitch, roll, t, exp] (FACEVID2VID_LAYOUT) around its canonical keypoints, and a
frame is rendered at the crop's size (256 px for the released weights).
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import torch
from torch import nn

from kdtalker.device import resolve_device, resolve_dtype
from kdtalker.errors import ConfigError
from kdtalker.facevid2vid.checkpoints import load_networks, renderer_states
from kdtalker.facevid2vid.generator import OcclusionAwareSPADEGenerator
from kdtalker.facevid2vid.head_expression import HeadExpressionEstimator
from kdtalker.facevid2vid.keypoint_detector import KeypointDetector
from kdtalker.facevid2vid.keypoints import headpose_to_degrees
from kdtalker.facevid2vid.layout import FACEVID2VID_LAYOUT, driving_keypoints
from kdtalker.renderer.grid_sample import GRID_SAMPLE_MODES
from kdtalker.renderer.layers import fold_all_batchnorms
from kdtalker.renderer.renderer import Source, image_tensor
from kdtalker.renderer.spade import SPADEResnetBlock
from kdtalker.renderer.warping import UpBlock3d


@torch.inference_mode()
def keypoint_info(
    kp_detector: KeypointDetector, he_estimator: HeadExpressionEstimator, image: torch.Tensor
) -> dict[str, torch.Tensor]:
    """(B, 3, H, W) in [0, 1] on the networks' device/dtype -> dict(kp canonical (B, 15, 3), yaw, pitch, roll (B, 1)
    degrees, t (B, 3), exp (B, 15, 3)) in float32: a source's (and, in extraction, every frame's) motion."""
    out = {k: v.float() for k, v in he_estimator(image).items()}
    b = image.shape[0]
    info = {name: headpose_to_degrees(out[name])[:, None] for name in ("yaw", "pitch", "roll")}
    info.update(t=out["t"], exp=out["exp"].reshape(b, -1, 3), kp=kp_detector(image).float())
    return info


class FaceVid2VidRenderer(nn.Module):
    """Keypoint detector, head-pose/expression estimator and generator behind the renderer API (inference_mode)."""

    layout = FACEVID2VID_LAYOUT
    frame_scale = 1  # frames at the source crop's size (256 px for the released weights)

    def __init__(
        self,
        kp_detector: KeypointDetector,
        he_estimator: HeadExpressionEstimator,
        generator: OcclusionAwareSPADEGenerator,
        translation_axes: tuple[int, ...],
        chunk_size: int,
        fold_batchnorm: bool,
        fuse_ops: bool,
        grid_sample: str,
    ):
        super().__init__()
        self.kp_detector, self.he_estimator, self.generator = kp_detector, he_estimator, generator
        if not set(translation_axes) <= {0, 1, 2}:
            raise ConfigError(f"renderer.translation_axes={list(translation_axes)} must name axes among 0, 1, 2")
        self.translation_axes = tuple(translation_axes)
        self.chunk_size = max(1, int(chunk_size))
        if grid_sample not in GRID_SAMPLE_MODES:
            raise ConfigError(f"renderer.grid_sample={grid_sample!r} is not one of {GRID_SAMPLE_MODES}")
        for module in (generator, generator.dense_motion_network):
            module.grid_sample = grid_sample
        self.eval().requires_grad_(False)
        if fold_batchnorm:
            fold_all_batchnorms(self)
        for module in self.modules():
            if isinstance(module, (SPADEResnetBlock, UpBlock3d)):
                module.fused = fuse_ops

    @classmethod
    def from_checkpoints(
        cls,
        weights: str | os.PathLike,
        head_pose_weights: str | os.PathLike | None,
        configs: Mapping[str, Mapping],
        device: str | torch.device,
        dtype: torch.dtype | str,
        translation_axes: tuple[int, ...] | list[int],
        chunk_size: int,
        fold_batchnorm: bool,
        fuse_ops: bool,
        grid_sample: str,
    ) -> "FaceVid2VidRenderer":
        """Load SadTalker's safetensors or the re-implementation's .pth.tar (head pose from `head_pose_weights`
        when given: some SadTalker releases keep the estimator only in the .pth.tar)."""
        device, dtype = resolve_device(device), resolve_dtype(dtype)
        states = renderer_states(weights, head_pose_weights)
        # a Mapping of states: load_networks names the part a file lacks
        nets = load_networks(states, configs, ("kp_detector", "he_estimator", "generator"), device, torch.float32)
        renderer = cls(
            nets["kp_detector"], nets["he_estimator"], nets["generator"], tuple(translation_axes), chunk_size,
            fold_batchnorm, fuse_ops, grid_sample,
        )  # fmt: skip
        return renderer.to(dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.generator.fourth.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.generator.fourth.weight.dtype

    def prepare_image(self, rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB (H, W, 3) (the crop) -> (1, 3, H, W) in [0, 1] on the renderer's device/dtype."""
        return image_tensor(rgb, self.device, self.dtype)

    @torch.inference_mode()
    def keypoint_info(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> dict(kp canonical (B, 15, 3), yaw, pitch, roll (B, 1) degrees, t (B, 3),
        exp (B, 15, 3)); keypoint math in float32."""
        return keypoint_info(self.kp_detector, self.he_estimator, image.to(self.device, self.dtype))

    def motion(self, info: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """keypoint_info dict -> motion vectors (B, 51) in the layout's order."""
        return self.layout.pack(**{name: info[name] for name, _ in self.layout.parts})

    def driving_keypoints(self, canonical: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """canonical kp (1 or T, 15, 3), motion (T, 51) -> driving keypoints (T, 15, 3) (translation_axes kept)."""
        return driving_keypoints(canonical.float(), motion.float(), self.translation_axes)

    @torch.inference_mode()
    def encode_source(self, image: np.ndarray | torch.Tensor) -> Source:
        """The source crop, uint8 RGB (H, W, 3) or (1, 3, H, W) in [0, 1] -> Source (all source-only work)."""
        image = self.prepare_image(image) if isinstance(image, np.ndarray) or image.ndim == 3 else image
        info = self.keypoint_info(image)
        x_s = self.driving_keypoints(info["kp"], self.motion(info))
        volume = self.generator.encode(image.to(self.device, self.dtype))
        compressed = self.generator.dense_motion_network.compress_source(volume)
        return Source(info, volume, x_s, compressed)

    @torch.inference_mode()
    def render(self, source: Source, x_d: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Source + driving keypoints x_d (B, 15, 3) -> frames (B, 3, H, W) in [0, 1], `chunk_size` frames at a time."""
        chunk = max(1, int(chunk_size or self.chunk_size))
        x_d = x_d.to(self.device, torch.float32)
        x_s = source.x_s.to(self.device, torch.float32)
        frames = []
        for start in range(0, x_d.shape[0], chunk):
            warped = self.generator.warp(source.f_s, x_d[start : start + chunk], x_s, source.compressed)
            frames.append(self.generator.decoder(warped["out"]))
        return torch.cat(frames)
