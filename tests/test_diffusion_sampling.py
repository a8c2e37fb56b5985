"""Schedulers, window sampling and the utterance-level glue on a small denoiser."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdtalker.diffusion import DDIMScheduler, DDPMScheduler, Denoiser, initial_noise, padded_audio, sample_motion
from kdtalker.errors import AudioError, ConfigError

SMALL = dict(width=32, depth=1, heads=2, head_dim=16, time_dim=8, audio_dim=12, window=8)


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1.3e-6, atol: float = 1e-5) -> None:
    """np.testing on tensors (torch.testing's first call imports for seconds)."""
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def model() -> Denoiser:
    torch.manual_seed(0)
    m = Denoiser(**SMALL)
    torch.nn.init.normal_(m.output_projection.weight, std=0.1)
    return m.eval()


@pytest.mark.parametrize("steps", [1, 5, 10, 20, 50, 100, 200])
def test_ddim_timesteps_for_every_ablated_step_count(steps):
    timesteps = DDIMScheduler().set_timesteps(steps)
    ratio = 1000 // steps
    assert len(timesteps) == steps and timesteps[0] == (steps - 1) * ratio and timesteps[-1] == 0
    assert len(DDPMScheduler().set_timesteps(steps)) == steps


def test_scheduler_config_errors():
    with pytest.raises(ConfigError, match="linear"):
        DDIMScheduler(beta_schedule="cosine")
    with pytest.raises(ConfigError, match="steps=0 must be between 1 and"):
        DDIMScheduler().set_timesteps(0)


def test_ddim_single_step_recovers_x0_from_the_exact_noise():
    sched = DDIMScheduler()
    x0, eps = torch.randn(2, 8, 70), torch.randn(2, 8, 70)
    t = int(sched.set_timesteps(50)[0])
    x_t = sched.add_noise(x0, eps, torch.full((2,), t))
    out = sched.step(eps, t, x_t)
    assert_close(out.pred_original_sample, x0, rtol=1e-4, atol=1e-4)


def test_official_noise_stream_and_per_sample_generators():
    torch.manual_seed(123)
    official = torch.randn(1, 8, 70, 3)[..., 0]
    ours = initial_noise(1, 8, 70, torch.Generator().manual_seed(123), torch.device("cpu"))
    assert torch.equal(ours, official)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    pair = initial_noise(2, 8, 70, gens, torch.device("cpu"))
    assert torch.equal(pair[1], initial_noise(1, 8, 70, torch.Generator().manual_seed(2), torch.device("cpu"))[0])


@pytest.mark.parametrize("frames", [1, 3, 4, 5, 8, 9, 17])
def test_fixed_padding_always_returns_the_audio_length(model, frames):
    audio = torch.randn(frames, 12)
    padded, padding = padded_audio(audio[None], 8)
    assert padded.shape[1] % 8 == 0 and padded.shape[1] == frames + padding
    assert torch.equal(padded[0, frames:], audio.repeat(8, 1)[:padding])  # wrap-around, as the official for T >= W/2
    out = sample_motion(
        model,
        DDIMScheduler(),
        audio,
        torch.randn(70),
        torch.randn(70),
        steps=2,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert out.shape == (frames, 70)


def test_official_short_audio_quirk_length(model):
    # T < W/2: the official code appends only T rows (L = 2T) and keeps [source, windows][1 : L - padding + 1],
    # Python slicing with a negative stop when padding > L (T = 20, W = 64 gives 37 frames).
    window = 8
    for frames in (2, 3):
        out = sample_motion(
            model,
            DDIMScheduler(),
            torch.randn(frames, 12),
            torch.randn(70),
            torch.randn(70),
            steps=2,
            official_short_audio=True,
            progress=False,
        )
        padding = (window - frames % window) % window
        assert out.shape[0] == len(range(2 * frames + 1)[1 : 2 * frames - padding + 1]) != frames
    with pytest.raises(AudioError, match="shorter than one video frame"):
        sample_motion(model, DDIMScheduler(), torch.randn(0, 12), torch.randn(70), torch.randn(70), 2, progress=False)


def test_windows_hand_over_their_last_frame_and_seeds_reproduce(model):
    audio, src, ori = torch.randn(20, 12), torch.randn(70), torch.randn(70)
    seen = []
    out = sample_motion(
        model,
        DDIMScheduler(),
        audio,
        src,
        ori,
        steps=3,
        generator=torch.Generator().manual_seed(7),
        window_callback=lambda k, ref, x0: seen.append((ref.clone(), x0.clone())),
        progress=False,
    )
    assert len(seen) == 3
    assert torch.equal(seen[0][0][0], src)
    for k in (1, 2):
        assert torch.equal(seen[k][0], seen[k - 1][1][:, -1])
    assert torch.equal(out, torch.cat([x0[0] for _, x0 in seen])[:20])
    again = sample_motion(
        model, DDIMScheduler(), audio, src, ori, steps=3, generator=torch.Generator().manual_seed(7), progress=False
    )
    assert torch.equal(out, again)
    other = sample_motion(
        model, DDIMScheduler(), audio, src, ori, steps=3, generator=torch.Generator().manual_seed(8), progress=False
    )
    assert not torch.allclose(out, other)


def test_a_batch_of_utterances_equals_one_by_one(model):
    audio, src, ori = torch.randn(2, 11, 12), torch.randn(2, 70), torch.randn(2, 70)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    for scheduler in (DDIMScheduler(), DDPMScheduler(), DDIMScheduler(eta=0.5)):
        batch = sample_motion(model, scheduler, audio, src, ori, steps=2, generator=gens(), progress=False)
        for i in range(2):
            alone = sample_motion(
                model, scheduler, audio[i], src[i], ori[i], steps=2, generator=gens()[i], progress=False
            )
            assert_close(batch[i], alone, rtol=1e-4, atol=1e-5)


def test_model_without_canonical_token_samples():
    torch.manual_seed(0)
    m = Denoiser(**{**SMALL, "canonical_token": False}).eval()
    out = sample_motion(m, DDIMScheduler(), torch.randn(10, 12), torch.randn(70), None, steps=2, progress=False)
    assert out.shape == (10, 70)
