"""MFCCs for SyncNet, numerically the recipe of python_speech_features 0.6 `mfcc(signal, 16000)` defaults.

25 ms frames every 10 ms (no window), 512-point power spectrum, 26 mel filters on integer FFT bins,
log, orthonormal DCT-II (13 kept), sinusoidal lifter 22, c_0 replaced by the log frame energy.
SyncNet feeds int16-scale samples (not scaled to +-1), which only shifts c_0.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import dct

_EPS = np.finfo(np.float64).eps


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK-style mel scale 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of hz_to_mel."""
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    num_filters: int = 26, nfft: int = 512, sample_rate: int = 16000, low_hz: float = 0.0, high_hz: float | None = None
) -> np.ndarray:
    """(num_filters, nfft // 2 + 1) triangles with edges on integer FFT bins floor((nfft + 1) f / sr), peak 1."""
    high_hz = sample_rate / 2 if high_hz is None else high_hz
    mels = np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), num_filters + 2)
    bins = np.floor((nfft + 1) * mel_to_hz(mels) / sample_rate)
    bank = np.zeros((num_filters, nfft // 2 + 1))
    for j in range(num_filters):
        lo, mid, hi = int(bins[j]), int(bins[j + 1]), int(bins[j + 2])
        for i in range(lo, mid):
            bank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(mid, hi):
            bank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return bank


def frame_signal(signal: np.ndarray, frame_len: int, frame_step: int) -> np.ndarray:
    """(N,) -> (1 + ceil((N - frame_len) / step), frame_len); the tail is zero-padded."""
    n = len(signal)
    num = 1 if n <= frame_len else 1 + int(math.ceil((n - frame_len) / frame_step))
    padded = np.concatenate([signal, np.zeros((num - 1) * frame_step + frame_len - n)])
    idx = np.arange(frame_len)[None, :] + frame_step * np.arange(num)[:, None]
    return padded[idx]


def mfcc(
    signal: np.ndarray,
    sample_rate: int = 16000,
    winlen: float = 0.025,
    winstep: float = 0.01,
    num_ceps: int = 13,
    num_filters: int = 26,
    nfft: int = 512,
    preemph: float = 0.97,
    ceplifter: int = 22,
) -> np.ndarray:
    """(N,) samples (int16 scale for SyncNet) -> (frames, num_ceps) float64 MFCCs, 100 frames per second."""
    x = np.asarray(signal, np.float64)
    x = np.append(x[0], x[1:] - preemph * x[:-1])
    frames = frame_signal(x, int(round(winlen * sample_rate)), int(round(winstep * sample_rate)))
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, _EPS, energy)
    feat = power @ mel_filterbank(num_filters, nfft, sample_rate).T
    feat = np.where(feat == 0, _EPS, feat)
    ceps = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :num_ceps]
    n = np.arange(num_ceps)
    ceps = ceps * (1 + (ceplifter / 2.0) * np.sin(np.pi * n / ceplifter))
    ceps[:, 0] = np.log(energy)
    return ceps
