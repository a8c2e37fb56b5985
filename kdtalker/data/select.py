"""data.select: keep the clips whose sound and lips are in sync by SyncNet's offset and confidence.

The paper trains on "4,282 aligned video-audio pairs" chosen from VoxCeleb without stating the rule; ours is
the usual SyncNet filter (as in LRS2 / Wav2Lip data preparation): |offset| <= data.select.max_offset frames
(1: at most one 40 ms frame off) and confidence >= data.select.min_confidence (kdtalker/configs/data/voxceleb.yaml).
Clips extracted without SyncNet weights carry no scores (NaN) and are kept, with a `note:` line saying so.
"""

from __future__ import annotations

import numpy as np


def select_clips(
    sync_offset: np.ndarray, sync_conf: np.ndarray, max_offset: float, min_confidence: float
) -> tuple[np.ndarray, str]:
    """(C,) offsets and confidences (NaN: not scored) -> (C,) bool keep mask and the one line for the log."""
    offset, conf = np.asarray(sync_offset, np.float64), np.asarray(sync_conf, np.float64)
    scored = np.isfinite(offset) & np.isfinite(conf)
    total = len(offset)
    if not scored.any():
        return np.ones(total, bool), (
            f"note: no SyncNet scores for the {total} training clips (extracted without SyncNet weights): all are kept"
        )
    passed = (
        scored & (np.abs(np.where(scored, offset, 0)) <= max_offset) & (np.where(scored, conf, 0) >= min_confidence)
    )
    keep = passed | ~scored
    line = (
        f"data.select: {int(passed.sum())} of {int(scored.sum())} scored clips pass "
        f"(|offset| <= {max_offset:g} frames, confidence >= {min_confidence:g})"
    )
    if not scored.all():
        line += f"; {int((~scored).sum())} clips without scores are kept"
    return keep, line
