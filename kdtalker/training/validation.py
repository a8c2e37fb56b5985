"""Held-out checks during training: validation loss on fixed windows, and sampled lip motion vs. the audio."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from kdtalker.data.dataset import MotionWindows, NormalisedClip
from kdtalker.diffusion.sampling import sample_motion
from kdtalker.training.metrics import group_correlation


@torch.no_grad()
def validation_loss(
    model,
    loss: Callable[[dict[str, torch.Tensor], torch.Generator], dict[str, torch.Tensor]],
    dataset: MotionWindows,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
) -> dict[str, float]:
    """Mean of each scalar `loss(batch, generator)` entry over the (fixed) validation windows, fixed noise and
    timesteps (a generator seeded with `seed`), no augmentation (the caller's loss leaves it off), model in eval."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    totals: dict[str, float] = {}
    count = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = {k: v.to(device) for k, v in batch.items()}
        out = loss(batch, generator)
        n = batch["x0"].shape[0]
        for k, v in out.items():
            if v.ndim == 0:
                totals[k] = totals.get(k, 0.0) + float(v) * n
        count += n
    model.train(was_training)
    return {k: v / count for k, v in totals.items()}


def _rows(x: np.ndarray | None, frames: int, device: torch.device) -> torch.Tensor | None:
    return None if x is None else torch.from_numpy(np.ascontiguousarray(x[:frames])).to(device)


@torch.no_grad()
def sample_clip(
    model,
    scheduler,
    clip: NormalisedClip,
    audio: np.ndarray | None,
    frames: int,
    steps: int,
    device: torch.device,
    seed: int,
    driving: np.ndarray | None = None,
    regions: torch.Tensor | None = None,
) -> np.ndarray:
    """Sample `frames` normalised motion frames (frames, D) after frame 0 of `clip`, by `audio` (frames, 512)
    and/or (a multi-signal model) the normalised `driving` motion (frames, D) through `regions` (R,)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    ori = clip.canonical(0)
    out = sample_motion(
        model,
        scheduler,
        _rows(audio, frames, device),
        torch.from_numpy(clip.motion[0].copy()).to(device),
        torch.from_numpy(ori).to(device),
        steps=steps,
        window=model.window,
        generator=generator,
        driving=_rows(driving, frames, device),
        regions=None if regions is None else regions.to(device),
        progress=False,
    )
    return out.float().cpu().numpy()


@torch.no_grad()
def sampled_lip_correlation(
    model,
    scheduler,
    clips: Sequence[NormalisedClip],
    lip_channels: Sequence[int],
    max_frames: int,
    steps: int,
    device: torch.device,
    seed: int = 0,
) -> dict[str, float]:
    """Sample each clip with its own audio and with another clip's audio; lip-channel Pearson r against the truth.

    The shuffled-audio control uses clip (i + 1)'s audio for clip i (time-reversed audio when there is only one
    clip): a model that ignores the audio scores the same on both, one that follows it scores far higher on the first.
    """
    was_training = model.training
    model.eval()
    frames = min(max_frames, *(len(c.motion) - 1 for c in clips))
    preds, shuffled, truths = [], [], []
    for i, clip in enumerate(clips):
        own = clip.audio[1 : 1 + frames]
        other = clips[(i + 1) % len(clips)].audio[1 : 1 + frames] if len(clips) > 1 else own[::-1]
        preds.append(sample_clip(model, scheduler, clip, own, frames, steps, device, seed + i))
        shuffled.append(sample_clip(model, scheduler, clip, other, frames, steps, device, seed + i))
        truths.append(clip.motion[1 : 1 + frames])
    model.train(was_training)
    return {
        "lip_corr": group_correlation(preds, truths, lip_channels),
        "lip_corr_shuffled": group_correlation(shuffled, truths, lip_channels),
    }
