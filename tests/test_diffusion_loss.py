"""The training objective and the audio-feature augmentation."""

from __future__ import annotations

import numpy as np
import torch

from kdtalker.diffusion import DDIMScheduler, Denoiser, augment_context, diffusion_loss

SMALL = dict(width=32, depth=1, heads=2, head_dim=16, time_dim=8, audio_dim=12)


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1.3e-6, atol: float = 1e-5) -> None:
    """np.testing on tensors (torch.testing's first call imports for seconds)."""
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=rtol, atol=atol)


def batch():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(3, 6, 70, generator=g),
        torch.randn(3, 70, generator=g),
        torch.randn(3, 70, generator=g),
        torch.randn(3, 6, 12, generator=g),
    )


def test_loss_is_the_epsilon_mse_and_trains():
    torch.manual_seed(0)
    model, sched = Denoiser(**SMALL), DDIMScheduler()
    x0, ref, ori, audio = batch()
    noise, steps = torch.randn(3, 6, 70), torch.tensor([0, 500, 999])
    out = diffusion_loss(model, sched, x0, ref, ori, audio, noise=noise, timesteps=steps)
    eps = model.forward_tokens(model.tokens(sched.add_noise(x0, noise, steps), ref, ori), steps, model.context(audio))[
        :, 2:
    ]
    assert_close(out["loss"], ((eps - noise) ** 2).mean())
    assert_close(out["loss_pose"], ((eps - noise)[..., 1:7] ** 2).mean())
    assert_close(out["loss_exp"], ((eps - noise)[..., 7:] ** 2).mean())
    out["loss"].backward()
    assert model.output_projection.weight.grad is not None
    assert model.layers[0].attn.fn.fn.rotary_emb.freqs.grad is None  # frozen


def test_augmentation_coin_and_statistics():
    torch.manual_seed(0)
    model, sched = Denoiser(**SMALL).eval(), DDIMScheduler()
    torch.nn.init.normal_(model.output_projection.weight)  # let the context reach the output
    args = batch()
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    plain = diffusion_loss(model, sched, *args, audio_noise_prob=0.0, generator=gen())
    never = diffusion_loss(model, sched, *args, audio_noise_prob=0.0, generator=gen())
    always = diffusion_loss(model, sched, *args, audio_noise_prob=1.0, generator=gen())
    assert torch.equal(plain["loss"], never["loss"]) and not torch.equal(plain["loss"], always["loss"])
    ctx = torch.cat([torch.zeros(2, 2, 4), torch.randn(2, 5, 4)], dim=1)
    z = torch.zeros_like(ctx)
    assert_close(augment_context(ctx, z), ctx + ctx.mean())  # N(mean, std) noise shifts by +mean
    z = torch.ones_like(ctx)
    assert_close(augment_context(ctx, z), ctx + ctx.mean() + ctx.std(unbiased=True))
