"""Paper Table 4: one-pass motion generators (VAE, GAN, VAE+GAN) built on the unchanged denoiser network."""

from kdtalker.generators.gan import TemporalDiscriminator, discriminator_loss, generator_adversarial_loss
from kdtalker.generators.objective import GENERATOR_KINDS, GeneratorObjective
from kdtalker.generators.vae import PosteriorEncoder, gaussian_kl

__all__ = [
    "GENERATOR_KINDS",
    "GeneratorObjective",
    "PosteriorEncoder",
    "TemporalDiscriminator",
    "discriminator_loss",
    "gaussian_kl",
    "generator_adversarial_loss",
]
