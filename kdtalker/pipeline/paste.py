"""Paste-back: put the animated face crop into the full original image through a feathered mask."""

from __future__ import annotations

import cv2
import numpy as np


class PasteBack:
    """Inverse of the source crop: frames (B, S, S, 3) of the crop box -> frames (B, H, W, 3) of the full image."""

    def __init__(self, original: np.ndarray, box: tuple[float, float, float, float], feather: float = 0.1):
        height, width = original.shape[:2]
        x0, y0 = max(int(round(box[0])), 0), max(int(round(box[1])), 0)
        x1, y1 = min(int(round(box[2])), width), min(int(round(box[3])), height)
        self.original = original
        self.roi = (x0, y0, x1, y1)
        self.background = original[y0:y1, x0:x1].astype(np.float32)
        # Sides on the image border are not faded: there is no original image beyond them to blend into.
        fade = (x0 > 0, y0 > 0, x1 < width, y1 < height)
        self.mask = feathered_mask(y1 - y0, x1 - x0, feather, fade)[..., None]

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 crop frames -> (B, H, W, 3) uint8 full frames."""
        x0, y0, x1, y1 = self.roi
        out = np.repeat(self.original[None], len(frames), axis=0)
        for i, frame in enumerate(frames):
            face = cv2.resize(frame, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA if frame.shape[0] > y1 - y0 else cv2.INTER_LINEAR)
            blended = self.background + (face.astype(np.float32) - self.background) * self.mask
            out[i, y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out


def feathered_mask(height: int, width: int, feather: float = 0.1, fade: tuple[bool, bool, bool, bool] = (True,) * 4) -> np.ndarray:
    """(height, width) float32 mask: 1 inside, falling smoothly to 0 over `feather` of the shorter side at the
    edges flagged in `fade` (left, top, right, bottom)."""
    ramp = max(feather * min(height, width), 1.0)
    rows, cols = np.arange(height) + 0.5, np.arange(width) + 0.5
    far = np.inf
    ys = np.minimum(rows if fade[1] else far, height - rows if fade[3] else far) / ramp
    xs = np.minimum(cols if fade[0] else far, width - cols if fade[2] else far) / ramp
    edge = np.clip(np.minimum(ys[:, None], xs[None, :]), 0.0, 1.0)
    return (edge * edge * (3.0 - 2.0 * edge)).astype(np.float32)  # smoothstep: no visible seam at either end
