"""Paste-back: put the animated face (the rendered 512x512 crop) into the full original image via a feathered mask."""

from __future__ import annotations

import math

import cv2
import numpy as np

from kdtalker.pipeline.face import box_matrix, frame_corners


class PasteBack:
    """Inverse of the source crop: frames (B, S, S, 3) -> frames (B, H, W, 3) of the full image.

    `matrix` (2, 3) maps a frame pixel to the original image (FaceCrop.matrix, for S = 512). Only the region the
    crop covers is touched; frame edges inside the image fade out over `feather` of the frame, edges lying on
    the image border do not (there is nothing to blend into there).
    """

    def __init__(self, original: np.ndarray, matrix: np.ndarray, frame_size: int = 512, feather: float = 0.1):
        height, width = original.shape[:2]
        matrix = np.asarray(matrix, np.float64)
        corners = frame_corners(matrix, frame_size)
        x0, y0 = max(int(math.floor(corners[:, 0].min())), 0), max(int(math.floor(corners[:, 1].min())), 0)
        x1, y1 = min(int(math.ceil(corners[:, 0].max())), width), min(int(math.ceil(corners[:, 1].max())), height)
        self.original, self.roi, self.frame_size = original, (x0, y0, x1, y1), frame_size
        # Shrinking by more than 2x with a bilinear warp aliases: area-resize the frame first, then warp.
        scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
        self.resized = min(frame_size, max(int(round(frame_size * scale)), 8)) if scale < 0.5 else frame_size
        factor = frame_size / self.resized
        to_frame = np.array([[factor, 0.0, 0.5 * factor - 0.5], [0.0, factor, 0.5 * factor - 0.5], [0.0, 0.0, 1.0]])
        full = np.vstack([matrix, [0.0, 0.0, 1.0]]) @ to_frame
        full[:2, 2] -= (x0, y0)
        self.warp = full[:2]
        # Which frame edges (left, top, right, bottom) lie inside the image: only those are feathered.
        mids = (corners + np.roll(corners, -1, axis=0)) / 2  # top, right, bottom, left edge midpoints
        inside = [(1.0 < x < width - 1.0) and (1.0 < y < height - 1.0) for x, y in mids]
        fade = (inside[3], inside[0], inside[1], inside[2])
        mask = feathered_mask(self.resized, self.resized, feather, fade)
        self.mask = cv2.warpAffine(mask, self.warp, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=0.0)[
            ..., None
        ]
        self.background = original[y0:y1, x0:x1].astype(np.float32)

    @classmethod
    def from_box(
        cls, original: np.ndarray, box: tuple[float, float, float, float], frame_size: int = 512, feather: float = 0.1
    ) -> "PasteBack":
        """PasteBack for an axis-aligned crop box (x0, y0, x1, y1) of the original image."""
        return cls(original, box_matrix(box, frame_size), frame_size, feather)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 crop frames -> (B, H, W, 3) uint8 full frames."""
        x0, y0, x1, y1 = self.roi
        out = np.repeat(self.original[None], len(frames), axis=0)
        for i, frame in enumerate(frames):
            if self.resized != self.frame_size:
                frame = cv2.resize(frame, (self.resized, self.resized), interpolation=cv2.INTER_AREA)
            face = cv2.warpAffine(
                frame, self.warp, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            blended = self.background + (face.astype(np.float32) - self.background) * self.mask
            out[i, y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out


def feathered_mask(
    height: int, width: int, feather: float = 0.1, fade: tuple[bool, bool, bool, bool] = (True,) * 4
) -> np.ndarray:
    """(height, width) float32 mask: 1 inside, falling smoothly to 0 over `feather` of the shorter side at the
    edges flagged in `fade` (left, top, right, bottom)."""
    ramp = max(feather * min(height, width), 1.0)
    rows, cols = np.arange(height) + 0.5, np.arange(width) + 0.5
    far = np.inf
    ys = np.minimum(rows if fade[1] else far, height - rows if fade[3] else far) / ramp
    xs = np.minimum(cols if fade[0] else far, width - cols if fade[2] else far) / ramp
    edge = np.clip(np.minimum(ys[:, None], xs[None, :]), 0.0, 1.0)
    return (edge * edge * (3.0 - 2.0 * edge)).astype(np.float32)  # smoothstep: no visible seam at either end
