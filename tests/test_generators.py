"""Paper Table 4's one-pass generators: the one-step sampler, the VAE/GAN pieces against their formulas, and each
kind trained a few steps by train() (what moves, resume, sampling shapes)."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_train_resume import TINY

from kdtalker.config import CONFIG_DIR
from kdtalker.diffusion import Denoiser, OneStepSampler, sample_motion, sample_window
from kdtalker.diffusion.checkpoint import kdtalker_state_dict
from kdtalker.errors import ConfigError
from kdtalker.generators import (
    GeneratorObjective,
    TemporalDiscriminator,
    discriminator_loss,
    gaussian_kl,
    generator_adversarial_loss,
)
from kdtalker.generators.vae import reparameterise
from kdtalker.training import train
from kdtalker.training.checkpoint import load_checkpoint

SMALL = dict(width=32, depth=1, heads=2, head_dim=16, window=16)


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere (a fresh denoiser's output layer is zero: its output would be 0)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def test_one_step_sampler_returns_the_network_output_at_its_time_input():
    model = _randomised(Denoiser(**SMALL))
    x_T, ref, ori, audio = torch.randn(2, 16, 70), torch.randn(2, 70), torch.randn(2, 70), torch.randn(2, 16, 512)
    sampler = OneStepSampler(timestep=999)
    assert sampler.set_timesteps(50).tolist() == [999]  # the count is ignored: one pass
    got = sample_window(model, sampler, x_T, ref, ori, audio, num_inference_steps=50)
    with torch.no_grad():
        expected = model(x_T, torch.full((1,), 999), audio, ref, ori)  # one time row for the batch, as sampled
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    motion = sample_motion(model, sampler, torch.randn(40, 512), ref[0], ori[0], 1, generator=torch.Generator())
    assert motion.shape == (40, 70) and torch.isfinite(motion).all()


def test_gaussian_kl_matches_torch_distributions():
    mu, logvar = torch.randn(3, 5, 7, dtype=torch.float64), torch.randn(3, 5, 7, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).mean()
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected, rtol=1e-12, atol=0)
    assert gaussian_kl(torch.zeros(4), torch.zeros(4)) == 0


def test_reparameterised_sample_has_the_posterior_moments():
    mu, logvar = torch.full((200_000,), 1.5), torch.full((200_000,), math.log(0.25))
    z = reparameterise(mu, logvar, torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(1.5, abs=0.005) and z.std().item() == pytest.approx(0.5, abs=0.005)


def test_adversarial_losses_are_the_non_saturating_gan_losses():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sig = torch.sigmoid
    expected_d = -(torch.log(sig(real)).mean() + torch.log(1 - sig(fake)).mean())
    torch.testing.assert_close(discriminator_loss(real, fake), expected_d)
    torch.testing.assert_close(generator_adversarial_loss(fake), -torch.log(sig(fake)).mean())


def test_discriminator_sees_time_and_audio():
    disc = TemporalDiscriminator(channels=16, layers=3, audio_features=8).eval()
    motion, audio = torch.randn(2, 64, 70), torch.randn(2, 64, 512)
    logits = disc(motion, audio)
    assert logits.shape == (2, 16)  # two stride-2 layers: 64 -> 16 patches
    assert not torch.allclose(disc(motion, torch.randn(2, 64, 512)), logits)  # audio-conditioned
    assert not torch.allclose(disc(motion.flip(1), audio.flip(1)), logits)  # order in time matters


def test_objective_wiring_and_its_errors():
    with pytest.raises(ConfigError, match="kind"):
        GeneratorObjective.build("flow", 999, 1.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="encoder"):
        GeneratorObjective("vae", 999, 1.0, 0.05, 0.0)
    objective = GeneratorObjective.build("vae_gan", 999, 1.0, 0.05, 0.1, Denoiser(**SMALL), {"channels": 16})
    model = _randomised(Denoiser(**SMALL))
    x0, ref, ori, audio = torch.randn(2, 16, 70), torch.randn(2, 70), torch.randn(2, 70), torch.randn(2, 16, 512)
    out = objective.loss(model, x0, ref, ori, audio, generator=torch.Generator().manual_seed(0))
    expected = out["reconstruction"] + 0.05 * out["kl"] + 0.1 * out["adversarial"]
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["reconstruction"], torch.mean((out["fake"] - x0) ** 2))
    d = objective.discriminator_loss(out["fake"], x0, audio)
    assert d["loss_d"].requires_grad and 0 < d["d_real"] < 1


def _cfg(tmp_path, kind: str, steps: int, *more: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose(
            "train",
            overrides=[
                *TINY,
                f"generator={kind}",
                f"data.root={tmp_path / 'data'}",
                f"train.out_dir={tmp_path / kind}",
                f"train.max_steps={steps}",
                "train.ckpt_every=2",
                "train.val_every=2",
                *more,
            ],
        )


@pytest.mark.parametrize("kind", ["vae", "gan", "vae_gan"])
def test_each_generator_trains_resumes_and_samples(tmp_path, kind):
    cfg = _cfg(tmp_path, kind, 2)
    assert cfg.diffusion._target_.endswith("OneStepSampler")  # the generator group picks the one-pass sampler
    first = train(cfg)
    ckpt = load_checkpoint(first.last_checkpoint)
    assert ckpt["generator_kind"] == kind
    state = ckpt["generator_state"]
    assert any(k.startswith("encoder.") for k in state) == ("vae" in kind)
    assert any(k.startswith("discriminator.") for k in state) == ("gan" in kind)
    assert {"val/loss", "val/reconstruction", "val/lip_corr"} <= set(first.metrics)
    # resumed to step 4: the encoder / discriminator continue from the saved state and move on
    resumed = train(_cfg(tmp_path, kind, 4))
    assert resumed.step == 4 and len(resumed.losses) == 2
    later = load_checkpoint(resumed.last_checkpoint)["generator_state"]
    assert any(not torch.equal(state[k], later[k]) for k in state if k.endswith("weight"))
    if "gan" in kind:
        assert load_checkpoint(resumed.last_checkpoint)["generator_optimizer"]["state"]
    # the model file is the official layout: the plain denoiser samples it through the one-step sampler
    model = Denoiser(**SMALL)
    model.load_state(kdtalker_state_dict(load_checkpoint(resumed.last_checkpoint)), "run")
    motion = sample_motion(model.eval(), OneStepSampler(), torch.randn(37, 512), torch.zeros(70), torch.zeros(70), 1)
    assert motion.shape == (37, 70) and torch.isfinite(motion).all()
    with pytest.raises(ConfigError, match=f"trained with generator={kind}"):
        train(_cfg(tmp_path, "diffusion", 6, f"train.out_dir={tmp_path / kind}"))


def test_generator_needs_the_one_step_sampler(tmp_path):
    with pytest.raises(ConfigError, match="diffusion=one_step"):
        train(_cfg(tmp_path, "vae", 1, "diffusion=ddim"))
    with pytest.raises(ConfigError, match="noise schedule"):
        train(_cfg(tmp_path, "diffusion", 1, "diffusion=one_step"))
