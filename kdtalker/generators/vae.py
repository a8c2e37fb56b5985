"""The VAE's posterior q(z | x_0, audio): a second denoiser network reads the real window and gives mean and
log-variance of a latent with the motion's shape (B, N, 70), which the generator network decodes (Kingma & Welling
2014; eq. numbers there: the reparameterisation z = mu + sigma * eps, eq. 10, and the Gaussian KL, appendix B)."""

from __future__ import annotations

import torch
from torch import nn

from kdtalker.diffusion.denoiser import Denoiser
from kdtalker.diffusion.schedulers import gaussian_like


class PosteriorEncoder(nn.Module):
    """x_0 (B, N, 70) + context (B, F, 512) + ref/ori (B, 70) -> (mu, logvar), each (B, N, 70).

    The backbone is the denoiser architecture with its time input fixed (the encoder is not a diffusion step);
    mu is its output and the log-variance a linear head on it, zero-initialised so training starts at sigma = 1.
    """

    def __init__(self, backbone: Denoiser, timestep: int):
        super().__init__()
        self.backbone = backbone
        self.timestep = timestep
        self.logvar = nn.Linear(backbone.motion_dim, backbone.motion_dim)
        nn.init.zeros_(self.logvar.weight)
        nn.init.zeros_(self.logvar.bias)

    def forward(
        self, x0: torch.Tensor, context: torch.Tensor, ref: torch.Tensor, ori: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.full((x0.shape[0],), self.timestep, dtype=torch.long, device=x0.device)
        mu = self.backbone(x0, t, context, ref, ori)
        return mu, self.logvar(mu)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per element, averaged: mean(0.5 (mu^2 + exp(logvar) - 1 - logvar))."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) from `generator`: (B, N, 70)."""
    return mu + (0.5 * logvar).exp() * gaussian_like(mu.shape, mu, generator)
