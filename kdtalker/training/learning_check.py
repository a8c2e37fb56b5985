"""Learning checks: a small denoiser trained on synthetic data must follow held-out signals, not another clip's.

check=lips: the audio-driven model's sampled lips follow the held-out audio (check=facevid2vid: the same in
Face-vid2vid's 51-d layout, its synthetic "lip" keypoints those data.lip_keypoints picks).
check=multisignal: the multi-signal model's lips follow the audio and its head pose (yaw, pitch, roll) the driving
motion, with both signals, either alone, and (as the control) with both taken from other clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from kdtalker.data.dataset import MotionWindows, NormalisedClip
from kdtalker.data.layouts import layout_named
from kdtalker.data.prepare import prepare_data
from kdtalker.diffusion.motion import ANGLES, LIP_KEYPOINTS, MotionNorm, expression_channels
from kdtalker.diffusion.multisignal import SIGNAL_REGIONS, region_mask
from kdtalker.errors import ConfigError
from kdtalker.training.metrics import group_correlation
from kdtalker.training.trainer import train
from kdtalker.training.validation import sample_clip, sampled_lip_correlation

POSE_CHANNELS = list(range(ANGLES.start, ANGLES.stop))
KINDS = ("lips", "multisignal")


@dataclass
class LearningCheck:
    """The check's correlations on held-out clips, and the final training loss."""

    kind: str
    values: dict[str, float]
    final_loss: float

    def lines(self) -> list[str]:
        v = self.values
        if self.kind == "lips":
            return [f"lip-audio correlation: {v['lip_corr']:.3f} (shuffled audio: {v['lip_corr_shuffled']:.3f})"]
        return [
            f"multisignal both: lips~audio {v['both_lips']:.3f}, pose~motion {v['both_pose']:.3f}",
            f"multisignal audio: lips~audio {v['audio_lips']:.3f}",
            f"multisignal motion: pose~motion {v['motion_pose']:.3f}",
            f"multisignal shuffled: lips~audio {v['shuffled_lips']:.3f}, pose~motion {v['shuffled_pose']:.3f}",
        ]


@torch.no_grad()
def multisignal_correlations(
    model, scheduler, clips: Sequence[NormalisedClip], max_frames: int, steps: int, device: torch.device, seed: int = 0
) -> dict[str, float]:
    """Sample every clip in the four modes; Pearson r (per clip, mean over channels and clips) of the sampled lips
    and pose against the clip's own: both / audio / motion use the clip's own signals (its own motion drives, the
    lips masked when the audio is on, as in training); shuffled takes clip i+1's audio and clip i+2's motion."""
    if len(clips) < 3:
        raise ConfigError(f"check.clips={len(clips)}: the shuffled mode needs at least 3 held-out clips")
    was_training = model.training
    model.eval()
    frames = min(max_frames, *(len(c.motion) - 1 for c in clips))
    lips = expression_channels(LIP_KEYPOINTS)
    both, every = region_mask(SIGNAL_REGIONS["both"]), region_mask(SIGNAL_REGIONS["motion"])
    preds: dict[str, list[np.ndarray]] = {"both": [], "audio": [], "motion": [], "shuffled": []}
    truths = []
    for i, clip in enumerate(clips):
        audio, motion = clip.audio[1 : 1 + frames], clip.motion[1 : 1 + frames]
        other_audio = clips[(i + 1) % len(clips)].audio[1 : 1 + frames]
        other_motion = clips[(i + 2) % len(clips)].motion[1 : 1 + frames]
        s = seed + i
        preds["both"].append(sample_clip(model, scheduler, clip, audio, frames, steps, device, s, motion, both))
        preds["audio"].append(sample_clip(model, scheduler, clip, audio, frames, steps, device, s))
        preds["motion"].append(sample_clip(model, scheduler, clip, None, frames, steps, device, s, motion, every))
        preds["shuffled"].append(
            sample_clip(model, scheduler, clip, other_audio, frames, steps, device, s, other_motion, both)
        )
        truths.append(motion)
    model.train(was_training)
    out = {}
    for mode, p in preds.items():
        out[f"{mode}_lips"] = group_correlation(p, truths, lips)
        out[f"{mode}_pose"] = group_correlation(p, truths, POSE_CHANNELS)
    return out


def learning_check(cfg: DictConfig) -> LearningCheck:
    """Train with cfg (kdtalker/configs/learning_check.yaml + check group), then sample the held-out clips."""
    kind = str(cfg.check.kind)
    if kind not in KINDS:
        raise ConfigError(f"check.kind={kind!r} is not one of {KINDS}")
    result = train(cfg)
    files = prepare_data(cfg.data, build=False)
    layout = layout_named(cfg.data.layout, "data.layout")
    norm = MotionNorm.load(files.norm, layout)
    val = MotionWindows(files.val, norm, int(cfg.data.window), 1, int(cfg.seed), train=False)
    clips = val.clips[: int(cfg.check.clips)]
    device = next(result.model.parameters()).device
    scheduler = instantiate(cfg.diffusion)
    args = (int(cfg.check.frames), int(cfg.check.steps), device)
    if kind == "lips":
        lips = layout.expression_channels(tuple(cfg.data.lip_keypoints))
        values = sampled_lip_correlation(result.model, scheduler, clips, lips, *args, seed=int(cfg.seed))
    else:
        if "motion" not in result.model.signals:
            raise ConfigError("check=multisignal needs model=kdtalker_multisignal")
        values = multisignal_correlations(result.model, scheduler, clips, *args, seed=int(cfg.seed))
    tail = result.losses[-50:]
    return LearningCheck(kind, values, sum(tail) / max(1, len(tail)))
