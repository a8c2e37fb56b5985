"""The audio condition as a configured object (the audio config group's `_target_`): speech -> per-frame features."""

from __future__ import annotations

import os

import numpy as np
import torch

from kdtalker.audio.checkpoint import load_audio_encoder
from kdtalker.audio.encoder import audio_features
from kdtalker.audio.streaming import StreamingSpeechFeatures


class SpeechFeatures:
    """(N,) 16 kHz speech -> (T, 512) features, one per video frame: Wav2Lip mel windows through its audio encoder."""

    def __init__(self, checkpoint: str | os.PathLike, batch_size: int, device: str | torch.device):
        if batch_size < 1:
            raise ValueError(f"audio.batch_size must be >= 1, got {batch_size}")
        self.encoder = load_audio_encoder(checkpoint, device)
        self.batch_size = batch_size

    def __call__(self, wav: np.ndarray, fps: float) -> torch.Tensor:
        """(N,) float32 16 kHz -> (T, 512) on the encoder's device, T = the video frames of the speech at `fps`."""
        return audio_features(wav, self.encoder, fps=fps, batch_size=self.batch_size)

    def stream(self, fps: float) -> StreamingSpeechFeatures:
        """An incremental front end on this encoder: pushed chunks give the features `__call__` gives the whole clip."""
        return StreamingSpeechFeatures(self.encoder, fps, self.batch_size)
