"""Frame count and per-video-frame 80x16 mel windows, with KDTalker's truncation and edge rules."""

from __future__ import annotations

import numpy as np

from kdtalker.audio.mel import MEL_FPS, SAMPLE_RATE

MEL_STEP_SIZE = 16  # mel frames per window: 200 ms at 80 mel frames/s
FRAME_OFFSET = 2  # the window of video frame i starts at video frame i - 2


def samples_per_frame(sample_rate: int = SAMPLE_RATE, fps: float = 25.0) -> float:
    """Audio samples per video frame (640.0 at 16 kHz, 25 fps)."""
    return sample_rate / fps


def num_video_frames(num_samples: int, sample_rate: int = SAMPLE_RATE, fps: float = 25.0) -> int:
    """Video frames covered by `num_samples`: int(N / (sr / fps)), truncated (a partial frame is dropped)."""
    return int(num_samples / samples_per_frame(sample_rate, fps))


def crop_length(num_frames: int, sample_rate: int = SAMPLE_RATE, fps: float = 25.0) -> int:
    """Samples kept for `num_frames` whole video frames: int(T * sr / fps)."""
    return int(num_frames * samples_per_frame(sample_rate, fps))


def crop_to_frames(wav: np.ndarray, num_frames: int, sample_rate: int = SAMPLE_RATE, fps: float = 25.0) -> np.ndarray:
    """(N,) -> (int(T * sr / fps),): the waveform cut to whole video frames before the STFT."""
    return wav[: crop_length(num_frames, sample_rate, fps)]


def window_starts(num_frames: int, fps: float = 25.0, first: int = 0) -> np.ndarray:
    """(T,) int64 first mel frame of the windows of frames first..first+T-1: int(80 (i - 2) / fps) truncated.

    At 25 fps frames 0, 1, 2, 3 start at -6, -3, 0, 3. `first` lets a stream ask for a later range with the
    same float64 arithmetic as the whole-file call.
    """
    i = np.arange(first, first + num_frames, dtype=np.float64)
    return np.trunc(MEL_FPS * ((i - FRAME_OFFSET) / fps)).astype(np.int64)


def window_indices(num_frames: int, num_mel_frames: int, fps: float = 25.0) -> np.ndarray:
    """(T, 16) int64 mel-frame indices of each window, each clamped to [0, M - 1]."""
    idx = window_starts(num_frames, fps)[:, None] + np.arange(MEL_STEP_SIZE)[None, :]
    return np.clip(idx, 0, num_mel_frames - 1)


def mel_windows(mel: np.ndarray, num_frames: int, fps: float = 25.0) -> np.ndarray:
    """(80, M) mel -> (T, 80, 16) float32 encoder input, one window per video frame."""
    if mel.ndim != 2 or mel.shape[1] < 1:
        raise ValueError(f"mel_windows expects an (80, M) spectrogram with M >= 1, got shape {mel.shape}")
    idx = window_indices(num_frames, mel.shape[1], fps)
    return np.ascontiguousarray(mel[:, idx].transpose(1, 0, 2), dtype=np.float32)
