"""Wav2Lip mel: numpy and batched torch versions against a librosa-built recipe; windows at other fps."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from kdtalker.audio import mel_windows, num_video_frames, torch_wav2lip_mel, wav2lip_mel, window_indices, window_starts

# Tolerances stated in torch_wav2lip_mel's docstring.
TORCH_F32_ATOL = 2e-4
TORCH_F64_ATOL = 1e-6


def librosa_wav2lip_mel(wav: np.ndarray) -> np.ndarray:
    """The recipe written with librosa / scipy calls, as an independent reference."""
    emphasised = scipy.signal.lfilter([1, -0.97], [1], wav)
    spec = np.abs(librosa.stft(y=emphasised, n_fft=800, hop_length=200, win_length=800))
    mel = np.dot(librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600), spec)
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4)


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Harmonic voice with a syllable envelope, a chirp and noise, in [-1, 1], float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    f0 = 120 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voice = sum(np.sin(k * phase) / k for k in range(1, 9)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    chirp = np.sin(2 * np.pi * (100 * t + 2000 * t**2))
    x = 0.3 * voice + 0.1 * chirp + 0.02 * rng.standard_normal(t.shape)
    x[len(x) // 3 : len(x) // 2] = 0.0  # a stretch of digital silence
    return (x / np.abs(x).max() * 0.9).astype(np.float32)


@pytest.mark.parametrize("seconds, seed", [(1.0, 0), (2.34, 1)])
def test_numpy_mel_matches_librosa(seconds, seed):
    wav = speech_like(seconds, seed)
    mel = wav2lip_mel(wav)
    assert mel.shape == (80, 1 + len(wav) // 200) and mel.dtype == np.float64
    np.testing.assert_allclose(mel, librosa_wav2lip_mel(wav), rtol=0, atol=1e-9)


def test_torch_mel_matches_librosa_within_stated_tolerance():
    batch = np.stack([speech_like(1.28, seed) for seed in range(3)])  # (3, N)
    expected = np.stack([librosa_wav2lip_mel(w) for w in batch])
    mel32 = torch_wav2lip_mel(torch.from_numpy(batch))
    mel64 = torch_wav2lip_mel(torch.from_numpy(batch).double())
    assert mel32.shape == expected.shape and mel32.dtype == torch.float32 and mel64.dtype == torch.float64
    np.testing.assert_allclose(mel32.double().numpy(), expected, rtol=0, atol=TORCH_F32_ATOL)
    np.testing.assert_allclose(mel64.numpy(), expected, rtol=0, atol=TORCH_F64_ATOL)


def test_torch_mel_batch_rows_are_independent():
    batch = torch.from_numpy(np.stack([speech_like(0.64, 3), speech_like(0.64, 4)])).double()
    together = torch_wav2lip_mel(batch)
    for i in range(2):
        torch.testing.assert_close(together[i], torch_wav2lip_mel(batch[i]), rtol=0, atol=1e-12)


def test_silence_and_edges_of_range():
    assert np.all(wav2lip_mel(np.zeros(1280, np.float32)) == -4.0)
    assert torch.all(torch_wav2lip_mel(torch.zeros(1, 1280)) == -4.0)
    loud = np.sign(speech_like(0.5, 5)).astype(np.float32)  # full-scale square-ish wave
    mel = wav2lip_mel(loud)
    assert mel.max() > 0 and mel.max() <= 4.0


def test_window_rule_at_25_fps():
    np.testing.assert_array_equal(window_starts(6), [-6, -3, 0, 3, 6, 9])
    idx = window_indices(80, 257)
    np.testing.assert_array_equal(idx[0], [0] * 7 + list(range(1, 10)))
    assert idx.max() == 256 and idx[-1, -1] == 256


@pytest.mark.parametrize("fps", [25.0, 30.0, 24.0, 12.5])
def test_windows_at_other_fps(fps):
    wav = speech_like(1.5, 6)
    num_frames = num_video_frames(len(wav), fps=fps)
    assert num_frames == int(len(wav) / (16000 / fps))
    mel = wav2lip_mel(wav[: int(num_frames * 16000 / fps)])
    windows = mel_windows(mel, num_frames, fps=fps)
    assert windows.shape == (num_frames, 80, 16) and windows.dtype == np.float32
    starts = window_starts(num_frames, fps)
    assert list(starts) == [int(80.0 * ((i - 2) / fps)) for i in range(num_frames)]
    i = num_frames // 2  # an interior window is 16 consecutive mel frames starting at s_i
    np.testing.assert_array_equal(windows[i], mel[:, starts[i] : starts[i] + 16].astype(np.float32))
