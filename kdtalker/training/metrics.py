"""How well sampled motion follows its signals: correlation of channel groups (lips, pose) with the ground truth."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def channel_correlation(pred: np.ndarray, target: np.ndarray, min_std: float = 1e-6) -> np.ndarray:
    """Pearson r over time per channel of (T, C) arrays -> (C,); a channel that does not move in either gives 0."""
    p = pred - pred.mean(0)
    g = target - target.mean(0)
    sp, sg = np.sqrt((p**2).mean(0)), np.sqrt((g**2).mean(0))
    ok = (sp > min_std) & (sg > min_std)
    r = np.zeros(pred.shape[1])
    r[ok] = (p[:, ok] * g[:, ok]).mean(0) / (sp[ok] * sg[ok])
    return r


def group_correlation(preds: Sequence[np.ndarray], targets: Sequence[np.ndarray], channels: Sequence[int]) -> float:
    """Mean Pearson r of `channels` (e.g. the lips') between sampled and true motion (each (T, 70)), over channels
    and clips (per clip, so that a clip's offset from another does not count as following)."""
    values = [channel_correlation(p[:, list(channels)], g[:, list(channels)]).mean() for p, g in zip(preds, targets)]
    return float(np.mean(values))
