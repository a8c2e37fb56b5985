"""The networks extraction runs per clip, as plain functions: a renderer's motion (LivePortrait's or Face-vid2vid's)
and Wav2Lip audio features."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from kdtalker.audio import audio_features
from kdtalker.data.extract import AudioFn, MotionFn
from kdtalker.errors import ConfigError
from kdtalker.facevid2vid.checkpoints import load_networks, renderer_states
from kdtalker.facevid2vid.head_expression import HeadExpressionEstimator
from kdtalker.facevid2vid.keypoint_detector import KeypointDetector
from kdtalker.facevid2vid.layout import FACEVID2VID_LAYOUT
from kdtalker.facevid2vid.renderer import keypoint_info
from kdtalker.motion_layout import MotionLayout, layout_of_target
from kdtalker.renderer.checkpoints import load_motion_extractor
from kdtalker.renderer.keypoints import headpose_to_degrees
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT


def liveportrait_motion_fn(motion_extractor: torch.nn.Module) -> MotionFn:
    """MotionExtractor -> frames (B, 256, 256, 3) uint8 -> {pitch, yaw, roll (B,1), t (B,3), exp, kp (B,21,3), scale}.

    Frames go in as RGB / 255 without further preprocessing, as the official extraction feeds get_kp_info.
    """
    param = next(motion_extractor.parameters())

    @torch.inference_mode()
    def motion(frames: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(param.device).permute(0, 3, 1, 2)
        out = motion_extractor(x.to(param.dtype) / 255.0)
        b = x.shape[0]
        info = {k: headpose_to_degrees(out[k]).reshape(b, 1) for k in ("pitch", "yaw", "roll")}
        info.update(
            t=out["t"].reshape(b, 3),
            exp=out["exp"].reshape(b, 21, 3),
            scale=out["scale"].reshape(b, 1),
            kp=out["kp"].reshape(b, 21, 3),
        )
        return {k: v.float().cpu().numpy() for k, v in info.items()}

    return motion


def facevid2vid_motion_fn(kp_detector: KeypointDetector, he_estimator: HeadExpressionEstimator) -> MotionFn:
    """Face-vid2vid's networks -> frames (B, 256, 256, 3) uint8 -> {yaw, pitch, roll (B,1) degrees, t (B,3),
    exp, kp (B,15,3)}: the motion FaceVid2VidRenderer.keypoint_info gives a source crop, for every frame."""
    param = next(he_estimator.parameters())

    @torch.inference_mode()
    def motion(frames: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(param.device).permute(0, 3, 1, 2)
        info = keypoint_info(kp_detector, he_estimator, x.to(param.dtype) / 255.0)
        return {k: v.float().cpu().numpy() for k, v in info.items()}

    return motion


def wav2lip_audio_fn(encoder: torch.nn.Module, fps: float, batch_size: int) -> AudioFn:
    """AudioEncoder -> wav (N,) 16 kHz -> (T, 512) float32 features, one per video frame."""

    def audio(wav: np.ndarray) -> np.ndarray:
        return audio_features(wav, encoder, fps=fps, batch_size=batch_size).float().cpu().numpy()

    return audio


def renderer_motion_fn(renderer: Mapping, motion_extractor: str, device: torch.device) -> tuple[MotionFn, MotionLayout]:
    """The renderer group's config (kdtalker/configs/renderer/) -> (the motion function of its layout, the layout).

    LivePortrait: the motion extractor file `motion_extractor`; Face-vid2vid: the keypoint detector and head-pose/
    expression estimator of `renderer.weights` (and `renderer.head_pose_weights`), its generator left unloaded.
    """
    layout = layout_of_target(renderer["_target_"])
    if layout == LIVEPORTRAIT_LAYOUT:
        return liveportrait_motion_fn(load_motion_extractor(motion_extractor, device)), layout
    if layout == FACEVID2VID_LAYOUT:
        states = renderer_states(renderer["weights"], renderer["head_pose_weights"])
        nets = load_networks(states, renderer["configs"], ("kp_detector", "he_estimator"), device, torch.float32)
        return facevid2vid_motion_fn(nets["kp_detector"], nets["he_estimator"]), layout
    raise ConfigError(f"renderer: {renderer['_target_']} has no motion extraction (renderer=liveportrait|facevid2vid)")
