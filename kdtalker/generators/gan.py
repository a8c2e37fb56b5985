"""The GAN's temporal discriminator on motion windows and the non-saturating adversarial losses
(Goodfellow et al. 2014, the -log D(G(z)) generator loss of section 3; here with logits: softplus)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class TemporalDiscriminator(nn.Module):
    """Motion window (B, N, 70) + its audio (B, N, 512) -> patch logits (B, N') over time (real > 0, generated < 0).

    Conditioned on the audio (a projection concatenated per frame) so that lips out of step with the speech look
    generated; it sees each frame and its velocity. 1-D convolutions over time with spectral norm (Miyato et al.
    2018) for a stable adversarial game; each stride-2 layer halves the time resolution.
    """

    def __init__(
        self, motion_dim: int = 70, audio_dim: int = 512, channels: int = 256, layers: int = 3, audio_features: int = 64
    ):
        super().__init__()
        self.audio = nn.Linear(audio_dim, audio_features)
        convs = [spectral_norm(nn.Conv1d(2 * motion_dim + audio_features, channels, 3, padding=1))]
        convs += [spectral_norm(nn.Conv1d(channels, channels, 4, stride=2, padding=1)) for _ in range(layers - 1)]
        self.convs = nn.ModuleList(convs)
        self.out = spectral_norm(nn.Conv1d(channels, 1, 3, padding=1))

    def forward(self, motion: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        velocity = torch.cat([torch.zeros_like(motion[:, :1]), motion.diff(dim=1)], dim=1)
        h = torch.cat([motion, velocity, self.audio(audio)], dim=-1).transpose(1, 2)
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        return self.out(h)[:, 0]


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(real) - log(1 - D(fake)) with D = sigmoid(logits), averaged: softplus(-real) + softplus(fake)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss -log D(G(z)) = softplus(-fake logits), averaged."""
    return F.softplus(-fake_logits).mean()
