"""Kalman RTS smoothing of the sampled motion (the official post-processing, pykalman's settings, in float64).

Model per channel: x_t = x_{t-1} + w (var q), z_t = x_t + v (var r), x_0 ~ N(z_0, 1). With identity transition and
observation matrices and isotropic covariances every channel is an independent scalar filter sharing one variance
sequence, so the official per-group filters (pitch, yaw, roll, t, exp) equal one vectorised pass over the columns.
"""

from __future__ import annotations

import numpy as np

from kdtalker.diffusion.motion import EXPRESSION, POSE
from kdtalker.motion_layout import MotionLayout

SMOOTHED_CHANNELS = slice(POSE.start, EXPRESSION.stop)  # pose and expression; the scale is left as sampled


def kalman_smooth(x: np.ndarray, transition_cov: float, observation_cov: float) -> np.ndarray:
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


def smooth_motion(motion: np.ndarray, transition_cov: float, observation_cov: float) -> np.ndarray:
    """Denormalised motion (T, 70) -> (T, 70) float32 with yaw..exp smoothed and the scale untouched (official)."""
    motion = np.asarray(motion, dtype=np.float32)
    out = motion.copy()
    out[:, SMOOTHED_CHANNELS] = kalman_smooth(motion[:, SMOOTHED_CHANNELS], transition_cov, observation_cov)
    return out


def _smoothing_lag(transition_cov: float, observation_cov: float, tolerance: float = 1e-18) -> int:
    """Frames after which a future observation moves the RTS estimate by less than `tolerance` of its size.

    The variance sequence does not depend on the data: the backward gains G_t = P_t / (P_t + q) settle to a
    constant below 1 and the influence of frame t + L on frame t is their product over the L frames between.
    """
    pred_var, gains = 1.0, []  # x_0 ~ N(z_0, 1)
    for _ in range(10000):
        filt_var = pred_var * observation_cov / (pred_var + observation_cov)
        pred_var = filt_var + transition_cov
        gains.append(filt_var / pred_var)
    worst = max(gains)
    if worst <= 0.0:
        return 1
    lag, influence = 0, 1.0
    while influence > tolerance:
        influence *= worst
        lag += 1
    return lag


class StreamingSmoother:
    """`smooth_motion` over a clip that arrives in pieces: push (n, dim) rows of `layout`, get the rows that are final.

    A fixed-lag RTS smoother: row t is given out once row t + lag has arrived, where `lag` is chosen so that later
    rows change it by less than 1e-18 of their size (far below float32), so the output equals `smooth_motion` of
    the whole clip. With the official settings the lag is 11 frames. strength 0 = no smoothing.
    """

    def __init__(self, transition_cov: float, observation_cov: float, enabled: bool, layout: MotionLayout):
        self.q, self.r, self.enabled = float(transition_cov), float(observation_cov), enabled
        # the renderer's smoothed parts (LivePortrait: all but the scale, as the official code)
        self.channels, self.dim = layout.channels(layout.smoothed), layout.dim
        self.lag = _smoothing_lag(self.q, self.r) if enabled else 0
        # Rows from _first on (absolute index _first + position): the rows not given out yet, plus the last one given
        # out (the forward filter continues from it), so memory stays bounded by the lag however long the clip.
        self._first = 0
        self._raw: list[np.ndarray] = []  # float32 rows as pushed
        self._pred_mean: list[np.ndarray] = []
        self._filt_mean: list[np.ndarray] = []
        self._pred_var: list[float] = []
        self._filt_var: list[float] = []
        self._emitted = 0

    @property
    def buffered_rows(self) -> int:
        """Rows held (at most lag + 1 between pushes, plus the rows of the push being processed)."""
        return len(self._raw)

    def push(self, motion: np.ndarray) -> np.ndarray:
        """Denormalised motion rows (n, dim) -> the (m, dim) float32 rows that no later row can change (m may be 0)."""
        for row in np.asarray(motion, dtype=np.float32):
            self._raw.append(row)
            if self.enabled:
                self._filter(row[self.channels].astype(np.float64))
        return self._emit(self._first + len(self._raw) - self.lag)

    def finish(self) -> np.ndarray:
        """The remaining rows (the clip has ended: the last row is smoothed as the last of the clip)."""
        return self._emit(self._first + len(self._raw))

    def _filter(self, z: np.ndarray) -> None:
        if not self._filt_mean:
            pred_mean, pred_var = z, 1.0
        else:
            pred_mean, pred_var = self._filt_mean[-1], self._filt_var[-1] + self.q
        gain = pred_var / (pred_var + self.r)
        self._pred_mean.append(pred_mean)
        self._pred_var.append(pred_var)
        self._filt_mean.append(pred_mean + gain * (z - pred_mean))
        self._filt_var.append(pred_var - gain * pred_var)

    def _emit(self, stop: int) -> np.ndarray:
        start = self._emitted
        if stop <= start:
            return np.empty((0, self.dim), np.float32)
        base = self._first  # list position p holds row base + p
        out = np.stack(self._raw[start - base : stop - base])
        if self.enabled:
            # backward pass from the newest row (as if the clip ended there) down to the rows given out now
            last = base + len(self._raw) - 1
            smooth = np.empty((last + 1 - start, self._filt_mean[0].shape[0]))
            smooth[-1] = self._filt_mean[last - base]
            for t in range(last - 1, start - 1, -1):
                back_gain = self._filt_var[t - base] / self._pred_var[t + 1 - base]
                smooth[t - start] = self._filt_mean[t - base] + back_gain * (
                    smooth[t + 1 - start] - self._pred_mean[t + 1 - base]
                )
            out[:, self.channels] = smooth[: stop - start]
        self._emitted = stop
        # forget the rows given out, but the last one: the forward filter of the next row starts from it
        drop = max(0, stop - 1 - base)
        for rows in (self._raw, self._pred_mean, self._filt_mean, self._pred_var, self._filt_var):
            del rows[:drop]
        self._first += drop
        return out
