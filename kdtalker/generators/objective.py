"""The training objective of a Table 4 generator: the denoiser network maps x_T ~ N(0, I) (or, in the VAE, the
posterior sample z) to the motion window in one pass, at the sampler's fixed time input.

    vae      reconstruction * ||G(z) - x_0||^2 + kl * KL(q(z | x_0) || N(0, I)),  z ~ q (reparameterised)
    gan      reconstruction * ||G(z) - x_0||^2 + adversarial * -log D(G(z)),        z ~ N(0, I)
    vae_gan  both (Larsen et al. 2016): the VAE terms plus the adversarial term on the decoded window

The discriminator has its own optimiser and loss (`discriminator_loss`); the encoder trains with the generator.
Conditioning (audio with the official augmentation, previous frame, canonical keypoints) is the diffusion model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdtalker.diffusion.denoiser import Denoiser
from kdtalker.diffusion.loss import augmented_context, split_channels
from kdtalker.diffusion.schedulers import gaussian_like
from kdtalker.errors import ConfigError
from kdtalker.generators.gan import TemporalDiscriminator, discriminator_loss, generator_adversarial_loss
from kdtalker.generators.vae import PosteriorEncoder, gaussian_kl, reparameterise

GENERATOR_KINDS = ("diffusion", "vae", "gan", "vae_gan")


class GeneratorObjective(nn.Module):
    """Losses of a one-pass generator; holds the parts that exist only for training (encoder, discriminator)."""

    def __init__(
        self,
        kind: str,
        timestep: int,
        reconstruction: float,
        kl: float,
        adversarial: float,
        encoder: PosteriorEncoder | None = None,
        discriminator: TemporalDiscriminator | None = None,
    ):
        super().__init__()
        if kind not in GENERATOR_KINDS[1:]:
            raise ConfigError(
                f"generator.kind={kind!r} is not one of {GENERATOR_KINDS[1:]} (diffusion has no objective)"
            )
        if ("vae" in kind) != (encoder is not None) or ("gan" in kind) != (discriminator is not None):
            raise ConfigError(f"generator.kind={kind}: the encoder is for vae kinds, the discriminator for gan kinds")
        self.kind = kind
        self.timestep = int(timestep)
        self.weights = {"reconstruction": float(reconstruction), "kl": float(kl), "adversarial": float(adversarial)}
        self.encoder = encoder
        self.discriminator = discriminator

    @classmethod
    def build(
        cls,
        kind: str,
        timestep: int,
        reconstruction: float,
        kl: float,
        adversarial: float,
        backbone: Denoiser | None = None,
        discriminator: dict | None = None,
        motion_dim: int = 70,
        audio_dim: int = 512,
    ) -> "GeneratorObjective":
        """From the generator config: `backbone` a fresh denoiser network for the VAE encoder, `discriminator` the
        TemporalDiscriminator's sizes (gan kinds) for motion and audio of the generator network's dimensions."""
        encoder = PosteriorEncoder(backbone, timestep) if "vae" in kind and backbone is not None else None
        disc = None
        if "gan" in kind:
            sizes = {k: v for k, v in dict(discriminator or {}).items() if k not in ("lr", "betas")}  # its optimiser's
            disc = TemporalDiscriminator(motion_dim=motion_dim, audio_dim=audio_dim, **sizes)
        return cls(kind, timestep, reconstruction, kl, adversarial, encoder, disc)

    def loss(
        self,
        model: Denoiser | nn.Module,
        x0: torch.Tensor,
        ref: torch.Tensor,
        ori: torch.Tensor | None,
        audio: torch.Tensor,
        *,
        audio_noise_prob: float = 0.0,
        generator: torch.Generator | None = None,
        split: tuple[slice, slice] | None = None,
    ) -> dict[str, torch.Tensor]:
        """x0 (B, N, D), ref/ori (B, D), audio (B, N, 512) -> dict(loss, loss_pose, loss_exp, [kl], [adversarial],
        fake (B, N, D): the generated window, for the discriminator's step); `split` as diffusion_loss's."""
        context = augmented_context(model, audio, audio_noise_prob, generator)
        out: dict[str, torch.Tensor] = {}
        if self.encoder is not None:
            mu, logvar = self.encoder(x0, context, ref, ori)
            z = reparameterise(mu, logvar, generator)
            out["kl"] = gaussian_kl(mu, logvar)
        else:
            z = gaussian_like(x0.shape, x0, generator)
        t = torch.full((x0.shape[0],), self.timestep, dtype=torch.long, device=x0.device)
        fake = model(z, t, context, ref, ori)
        w = self.weights
        pose, expression = split_channels(split, x0.shape[-1])
        out["loss_pose"] = F.mse_loss(fake[..., pose], x0[..., pose])
        out["loss_exp"] = F.mse_loss(fake[..., expression], x0[..., expression])
        reconstruction = F.mse_loss(fake, x0)
        loss = w["reconstruction"] * reconstruction
        if "kl" in out:
            loss = loss + w["kl"] * out["kl"]
        if self.discriminator is not None:
            out["adversarial"] = generator_adversarial_loss(self.discriminator(fake, audio))
            loss = loss + w["adversarial"] * out["adversarial"]
        out["reconstruction"] = reconstruction
        out["loss"] = loss
        out["fake"] = fake
        return out

    def discriminator_loss(self, fake: torch.Tensor, x0: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generated (detached) and real windows (B, N, 70) with their audio -> dict(loss_d, d_real, d_fake)."""
        real_logits = self.discriminator(x0, audio)
        fake_logits = self.discriminator(fake.detach(), audio)
        return {
            "loss_d": discriminator_loss(real_logits, fake_logits),
            "d_real": torch.sigmoid(real_logits).mean().detach(),
            "d_fake": torch.sigmoid(fake_logits).mean().detach(),
        }
