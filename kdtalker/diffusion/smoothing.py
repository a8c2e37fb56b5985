"""Kalman RTS smoothing of the sampled motion (the official post-processing, pykalman's settings, in float64).

Model per channel: x_t = x_{t-1} + w (var q), z_t = x_t + v (var r), x_0 ~ N(z_0, 1). With identity transition and
observation matrices and isotropic covariances every channel is an independent scalar filter sharing one variance
sequence, so the official per-group filters (pitch, yaw, roll, t, exp) equal one vectorised pass over the columns.
"""

from __future__ import annotations

import numpy as np

from kdtalker.diffusion.motion import EXPRESSION, POSE

SMOOTHED_CHANNELS = slice(POSE.start, EXPRESSION.stop)  # pose and expression; the scale is left as sampled


def kalman_smooth(x: np.ndarray, transition_cov: float = 0.05, observation_cov: float = 0.001) -> np.ndarray:
    """Observations (T, D) -> RTS-smoothed state means (T, D) float64 (initial mean z_0, initial variance 1)."""
    z = np.asarray(x, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    num = z.shape[0]
    if num == 0:
        return z.copy()
    pred_mean = np.empty_like(z)
    filt_mean = np.empty_like(z)
    pred_var = np.empty(num)
    filt_var = np.empty(num)
    for t in range(num):
        if t == 0:
            pred_mean[0], pred_var[0] = z[0], 1.0
        else:
            pred_mean[t], pred_var[t] = filt_mean[t - 1], filt_var[t - 1] + transition_cov
        gain = pred_var[t] / (pred_var[t] + observation_cov)
        filt_mean[t] = pred_mean[t] + gain * (z[t] - pred_mean[t])
        filt_var[t] = pred_var[t] - gain * pred_var[t]
    smooth = filt_mean.copy()
    for t in range(num - 2, -1, -1):
        back_gain = filt_var[t] / pred_var[t + 1]
        smooth[t] = filt_mean[t] + back_gain * (smooth[t + 1] - pred_mean[t + 1])
    return smooth.reshape(np.shape(x)) if np.ndim(x) == 1 else smooth


def smooth_motion(motion: np.ndarray, transition_cov: float = 0.05, observation_cov: float = 0.001) -> np.ndarray:
    """Denormalised motion (T, 70) -> (T, 70) float32 with yaw..exp smoothed and the scale untouched (official)."""
    motion = np.asarray(motion, dtype=np.float32)
    out = motion.copy()
    out[:, SMOOTHED_CHANNELS] = kalman_smooth(motion[:, SMOOTHED_CHANNELS], transition_cov, observation_cov)
    return out
