"""CPBD no-reference sharpness (Narvekar & Karam 2011), following the `cpbd` PyPI package (1.0.7).

The package no longer imports with current SciPy (and needs scikit-image); this is the same recipe on
numpy / scipy / OpenCV:

* Canny edges (only used to classify 64x64 blocks as edge blocks: more than 0.2 % edge pixels):
  Gaussian sigma 1, Sobel gradients, hysteresis at 0.1 / 0.2 (scikit-image's defaults for a float
  image, i.e. absolute values on a 0..255 image). Differences from skimage.feature.canny: OpenCV's
  non-maximum suppression uses 4 direction sectors instead of skimage's interpolation, and the
  Gaussian is plain reflect-padded instead of skimage's mask-normalised zero padding. Both only move
  individual edge pixels, so block classification practically never changes.
* Sobel edges for width measurement, as the package's Octave-style `sobel`: squared response of the
  horizontal-derivative kernel normalised by its absolute sum, threshold 2 * sqrt(mean), then
  "simple thinning" (strict local maximum along the row or the column). Exactly the package's maths.
* Marziliano edge widths along rows, for gradient angles quantised to 0 or +-180 degrees only (as the
  package does), capped at 101 pixels per side; probability of blur 1 - exp(-(w / w_JNB)^3.6) with
  w_JNB = 5 for block contrast <= 50 and 3 above; CPBD = fraction of edges with probability <= 0.63.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

THRESHOLD = 0.002  # fraction of Canny edge pixels that makes a block an edge block
BETA = 3.6
BLOCK = 64
WIDTH_JNB = np.concatenate([5 * np.ones(51), 3 * np.ones(205)])
MAX_MARGIN = 100
_CANNY_SCALE = 16.0  # fixed-point scale for handing float gradients to cv2.Canny as int16


def canny_edges(image: np.ndarray, sigma: float = 1.0, low: float = 0.1, high: float = 0.2) -> np.ndarray:
    """(H,W) float image (0..255) -> (H,W) bool Canny edge map (1-pixel border cleared)."""
    smoothed = ndimage.gaussian_filter(image, sigma, mode="reflect", truncate=4.0)
    dx = ndimage.sobel(smoothed, axis=1) * _CANNY_SCALE
    dy = ndimage.sobel(smoothed, axis=0) * _CANNY_SCALE
    dx = np.clip(np.round(dx), -32768, 32767).astype(np.int16)
    dy = np.clip(np.round(dy), -32768, 32767).astype(np.int16)
    edges = cv2.Canny(dx, dy, low * _CANNY_SCALE, high * _CANNY_SCALE, L2gradient=True) > 0
    edges[[0, -1], :] = False
    edges[:, [0, -1]] = False
    return edges


def sobel_edges(image: np.ndarray) -> np.ndarray:
    """(H,W) float image -> (H,W) bool thinned vertical-edge map (the cpbd package's Octave-style Sobel)."""
    kernel = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 8.0
    strength = np.square(ndimage.convolve(image, kernel))
    strength[strength <= 2 * np.sqrt(np.mean(strength))] = 0
    zero_col = np.zeros((strength.shape[0], 1))
    zero_row = np.zeros((1, strength.shape[1]))
    along_x = (strength > np.c_[zero_col, strength[:, :-1]]) & (strength > np.c_[strength[:, 1:], zero_col])
    along_y = (strength > np.r_[zero_row, strength[:-1, :]]) & (strength > np.r_[strength[1:, :], zero_row])
    return along_x | along_y


def _runs(cond: np.ndarray, reverse: bool) -> np.ndarray:
    """Per row, the number of consecutive True values ending at each column (scanning right-to-left if reverse)."""
    runs = np.zeros(cond.shape, np.int64)
    cols = range(cond.shape[1] - 1, -1, -1) if reverse else range(cond.shape[1])
    prev = np.zeros(cond.shape[0], np.int64)
    for c in cols:
        prev = np.where(cond[:, c], prev + 1, 0)
        runs[:, c] = prev
    return runs


def marziliano_widths(edges: np.ndarray, image: np.ndarray) -> np.ndarray:
    """(H,W) edge map + image -> (H,W) edge widths (0 off edges), measured along rows."""
    gy, gx = np.gradient(image)
    angles = np.zeros(image.shape)
    nz = gx != 0
    angles[nz] = np.degrees(np.arctan2(gy[nz], gx[nz]))
    angles[(gx == 0) & (gy == np.pi / 2)] = 90  # the package's (odd) test of gy against pi/2
    widths = np.zeros(image.shape)
    if not np.any(angles):
        return widths
    quant = 45 * np.round(angles / 45)
    # left/right differences: d_left[:, j] = I[j-1] - I[j] (outer minus inner going left), d_right[:, j] = I[j+1] - I[j]
    d_left = np.full(image.shape, np.nan)
    d_left[:, 1:] = image[:, :-1] - image[:, 1:]
    d_right = np.full(image.shape, np.nan)
    d_right[:, :-1] = image[:, 1:] - image[:, :-1]
    h, w = image.shape
    rows, cols = np.nonzero(edges[1 : h - 1, 1 : w - 1])
    rows, cols = rows + 1, cols + 1
    for falling, mask in ((True, np.abs(quant[rows, cols]) == 180), (False, quant[rows, cols] == 0)):
        r, c = rows[mask], cols[mask]
        if len(r) == 0:
            continue
        # a 180-degree edge falls left to right: the walk goes on while intensity rises to the left / falls to the right
        left = _runs(d_left > 0 if falling else d_left < 0, reverse=False)
        right = _runs(d_right < 0 if falling else d_right > 0, reverse=True)
        widths[r, c] = (np.minimum(left[r, c - 1], MAX_MARGIN) + 1) + (np.minimum(right[r, c + 1], MAX_MARGIN) + 1)
    return widths


def cpbd(gray: np.ndarray) -> float:
    """(H,W) grey image (uint8 or float, 0..255) -> CPBD sharpness in [0, 1] (higher is sharper)."""
    image = np.asarray(gray, np.float64)
    if image.ndim != 2:
        raise ValueError(f"cpbd expects a 2-D grey image, got shape {image.shape}")
    canny = canny_edges(image)
    widths = marziliano_widths(sobel_edges(image), image)
    hist = np.zeros(101)
    total = 0
    for i in range(image.shape[0] // BLOCK):
        for j in range(image.shape[1] // BLOCK):
            rows, cols = slice(BLOCK * i, BLOCK * (i + 1)), slice(BLOCK * j, BLOCK * (j + 1))
            if np.count_nonzero(canny[rows, cols]) <= BLOCK * BLOCK * THRESHOLD:
                continue
            block_widths = widths[rows, cols]
            block_widths = block_widths[block_widths != 0]
            block = image[rows, cols]
            jnb = WIDTH_JNB[int(np.max(block) - np.min(block))]
            prob = 1 - np.exp(-(np.abs(block_widths / jnb) ** BETA))
            np.add.at(hist, np.round(prob * 100).astype(np.int64), 1)
            total += len(prob)
    if total:
        hist = hist / total
    return float(np.sum(hist[:64]))


def video_cpbd(frames_rgb: np.ndarray, stride: int = 1) -> float:
    """(T,H,W,3) uint8 RGB frames -> mean CPBD of their grey versions (every `stride`-th frame)."""
    return float(np.mean([cpbd(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)) for f in frames_rgb[::stride]]))
