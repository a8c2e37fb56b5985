"""Beat-align score of KDTalker's evaluation (`evaluation/beat_align_score/cal_beat_align_score.py`).

Audio beats: librosa.beat.beat_track on the soundtrack loaded at librosa's default 22050 Hz (seconds).
Motion beats: local minima (strict, scipy argrelextrema) of the kinetic velocity - the mean over
landmarks of the frame-to-frame displacement norm - after a Gaussian filter with sigma 5 (frames),
divided by the fps. Score = mean over audio beats of exp(-d^2 / (2 sigma^2)) with d the distance to
the nearest motion beat and sigma = 0.1 s. The official script takes 68 points of MediaPipe Face
Mesh (normalised x, y, z); MediaPipe is not a dependency here, so landmarks come from dlib's 68-point
model (pixels, 2-D). The minima of a velocity curve do not depend on its scale, only the weighting of
depth against the image plane differs.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import argrelextrema

SIGMA = 0.1
SMOOTH = 5


def motion_beats(landmarks: np.ndarray, smooth: float = SMOOTH) -> np.ndarray:
    """(T,K,C) landmarks per frame -> frame indices (into the T-1 velocities) of kinetic-velocity minima."""
    lm = np.asarray(landmarks, np.float64)
    velocity = np.mean(np.sqrt(np.sum((lm[1:] - lm[:-1]) ** 2, axis=2)), axis=1)
    velocity = gaussian_filter(velocity, smooth)
    return argrelextrema(velocity, np.less)[0]


def audio_beats(wav: np.ndarray, sample_rate: int = 22050) -> np.ndarray:
    """(N,) mono waveform -> beat times in seconds (librosa.beat.beat_track defaults)."""
    import librosa

    _, frames = librosa.beat.beat_track(y=np.asarray(wav, np.float32), sr=sample_rate)
    return librosa.frames_to_time(frames, sr=sample_rate)


def beat_align_score(audio_beat_times: np.ndarray, motion_beat_times: np.ndarray, sigma: float = SIGMA) -> float:
    """Mean over audio beats of exp(-(distance to the nearest motion beat)^2 / (2 sigma^2)); nan without beats."""
    a = np.asarray(audio_beat_times, np.float64)
    m = np.asarray(motion_beat_times, np.float64)
    if len(a) == 0 or len(m) == 0:
        return float("nan")
    nearest = np.min(np.abs(m[None, :] - a[:, None]), axis=1)
    return float(np.mean(np.exp(-(nearest**2) / (2 * sigma**2))))
