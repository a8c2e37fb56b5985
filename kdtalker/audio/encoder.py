"""Wav2Lip's audio encoder: 13 conv blocks turning one 80x16 mel window into a 512-d vector per video frame."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kdtalker.audio.mel import SAMPLE_RATE, wav2lip_mel
from kdtalker.audio.windows import crop_to_frames, mel_windows, num_video_frames
from kdtalker.errors import AudioError

# (in, out, kernel, stride (H=mel, W=time), padding, residual) of each block, as in Wav2Lip.
ENCODER_LAYERS = (
    (1, 32, 3, (1, 1), 1, False),
    (32, 32, 3, (1, 1), 1, True),
    (32, 32, 3, (1, 1), 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, (1, 1), 1, True),
    (64, 64, 3, (1, 1), 1, True),
    (64, 128, 3, (3, 3), 1, False),
    (128, 128, 3, (1, 1), 1, True),
    (128, 128, 3, (1, 1), 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, (1, 1), 1, True),
    (256, 512, 3, (1, 1), 0, False),
    (512, 512, 1, (1, 1), 0, False),
)


class ConvBlock(nn.Module):
    """Conv2d (bias) -> BatchNorm2d -> optional identity residual -> ReLU (ReLU after the add, as in Wav2Lip)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: tuple[int, int], padding: int, residual: bool):
        super().__init__()
        # `conv_block.0` / `conv_block.1` are the key names stored in wav2lip.pth.
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return torch.relu(out)


class AudioEncoder(nn.Sequential):
    """(B, T, 1, 80, 16) mel windows -> (B, T, 512) non-negative audio features.

    A Sequential of the 13 blocks so that its state-dict keys (`<L>.conv_block.<0|1>.*`) are exactly those
    of wav2lip.pth after removing `module.audio_encoder.`.
    """

    def __init__(self):
        super().__init__(*(ConvBlock(*layer) for layer in ENCODER_LAYERS))

    def encode_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """(N, 1, 80, 16) -> (N, 512)."""
        return super().forward(windows).flatten(1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, T, 1, 80, 16) -> (B, T, 512); frames of all samples go through in one batch, sample-major."""
        if windows.dim() != 5 or tuple(windows.shape[2:]) != (1, 80, 16):
            raise ValueError(f"AudioEncoder expects (B, T, 1, 80, 16) windows, got shape {tuple(windows.shape)}")
        b, t = windows.shape[:2]
        # Sample-major flatten and unflatten keep each sample's frames together (KDTalker's own reshape
        # is only right for B = 1).
        return self.encode_windows(windows.reshape(b * t, 1, 80, 16)).reshape(b, t, -1)


def audio_windows(wav: np.ndarray, fps: float = 25.0) -> np.ndarray:
    """(N,) 16 kHz waveform -> (T, 80, 16) float32 windows, T = int(N / (16000 / fps)): crop, mel, windows."""
    num_frames = num_video_frames(len(wav), SAMPLE_RATE, fps)
    if num_frames < 1:
        raise AudioError(
            f"the audio is {len(wav)} samples ({len(wav) / SAMPLE_RATE * 1000:.1f} ms), shorter than one video frame "
            f"at {fps:g} fps; give a longer recording"
        )
    mel = wav2lip_mel(crop_to_frames(wav, num_frames, SAMPLE_RATE, fps))
    return mel_windows(mel, num_frames, fps)


@torch.inference_mode()
def encode_windows(windows: np.ndarray, encoder: AudioEncoder, batch_size: int) -> torch.Tensor:
    """(T, 80, 16) float32 windows -> (T, 512) features on the encoder's device and dtype, `batch_size` per forward."""
    param = next(encoder.parameters())
    if len(windows) == 0:
        return torch.zeros(0, ENCODER_LAYERS[-1][1], device=param.device, dtype=param.dtype)
    chunks = []
    for start in tqdm(
        range(0, len(windows), batch_size), desc="audio features", leave=False, disable=len(windows) <= batch_size
    ):
        batch = torch.from_numpy(windows[start : start + batch_size]).to(device=param.device, dtype=param.dtype)
        chunks.append(encoder.encode_windows(batch[:, None]))
    return torch.cat(chunks)


def audio_features(wav: np.ndarray, encoder: AudioEncoder, fps: float, batch_size: int) -> torch.Tensor:
    """(N,) 16 kHz waveform -> (T, 512) per-video-frame audio features on the encoder's device and dtype."""
    return encode_windows(audio_windows(np.asarray(wav, dtype=np.float32), fps), encoder, batch_size)
