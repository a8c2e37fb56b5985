"""The two networks extraction runs per clip, as plain functions: LivePortrait motion and Wav2Lip audio features."""

from __future__ import annotations

import numpy as np
import torch

from kdtalker.audio import audio_features
from kdtalker.data.extract import AudioFn, MotionFn
from kdtalker.renderer.keypoints import headpose_to_degrees


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


def wav2lip_audio_fn(encoder: torch.nn.Module, fps: float, batch_size: int) -> AudioFn:
    """AudioEncoder -> wav (N,) 16 kHz -> (T, 512) float32 features, one per video frame."""

    def audio(wav: np.ndarray) -> np.ndarray:
        return audio_features(wav, encoder, fps=fps, batch_size=batch_size).float().cpu().numpy()

    return audio
