"""Sliding-window sampling with a short hop (inpainted overlap) and keyframes on a small denoiser."""

from __future__ import annotations

import pytest
import torch

from kdtalker.diffusion import DDIMScheduler, DDPMScheduler, Denoiser, Known, OneStepSampler, sample_motion
from kdtalker.diffusion.motion import POSE
from kdtalker.diffusion.sampling import hop_length, motion_windows
from kdtalker.errors import ConfigError

SMALL = dict(width=32, depth=1, heads=2, head_dim=16, time_dim=8, audio_dim=12, window=8)


@pytest.fixture(scope="module")
def model() -> Denoiser:
    torch.manual_seed(0)
    m = Denoiser(**SMALL)
    torch.nn.init.normal_(m.output_projection.weight, std=0.1)
    return m.eval()


def sample(model, audio, seed=7, scheduler=None, **kwargs) -> torch.Tensor:
    """sample_motion with 3 steps and a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    src, ori = torch.linspace(-1, 1, 70), torch.linspace(1, -1, 70)
    return sample_motion(
        model, scheduler or DDIMScheduler(), audio, src, ori, steps=3, generator=generator, progress=False, **kwargs
    )


def test_hop_of_a_whole_window_is_todays_sampling_bit_for_bit(model):
    audio = torch.randn(21, 12, generator=torch.Generator().manual_seed(1))
    for scheduler in (DDIMScheduler, DDPMScheduler):
        today = sample(model, audio, scheduler=scheduler())
        assert torch.equal(sample(model, audio, scheduler=scheduler(), hop=8), today)
        free = Known(torch.zeros(1, 21, 70), torch.zeros(1, 21, 70, dtype=torch.bool))  # a mask holding nothing
        assert torch.equal(sample(model, audio, scheduler=scheduler(), hop=8, known=free), today)


@pytest.mark.parametrize("hop", [1, 2, 3, 5, 7])
def test_short_hops_give_every_length_deterministically(model, hop):
    for frames in (1, 7, 8, 9, 20):
        audio = torch.randn(frames, 12, generator=torch.Generator().manual_seed(frames))
        out = sample(model, audio, hop=hop)
        assert out.shape == (frames, 70) and torch.isfinite(out).all()
        assert torch.equal(out, sample(model, audio, hop=hop))
        if frames > 8:  # beyond the first window the hop changes the motion, and the seed too
            assert not torch.equal(out, sample(model, audio))
            assert not torch.allclose(out, sample(model, audio, seed=8, hop=hop))


def test_each_window_holds_the_frames_already_made_and_starts_after_the_one_before(model, monkeypatch):
    import kdtalker.diffusion.sampling as sampling

    audio = torch.randn(1, 20, 12, generator=torch.Generator().manual_seed(2))
    src, ori = torch.randn(1, 70), torch.randn(1, 70)
    real, calls = sampling.sample_window, []
    monkeypatch.setattr(sampling, "sample_window", lambda *a, **kw: (calls.append(kw), real(*a, **kw))[1])
    gen = torch.Generator().manual_seed(3)
    windows = motion_windows(model, DDIMScheduler(), audio, src, ori, 3, generator=gen, hop=3, progress=False)
    refs, made = zip(*windows)
    hop, window = 3, 8
    assert hop_length(20, window, hop) == 20 and len(made) == 5  # windows at 0, 3, ..., 12: 8 + 4 x 3 frames
    assert [m.shape[1] for m in made] == [8, 3, 3, 3, 3]
    frames = torch.cat(made, dim=1)
    assert torch.equal(refs[0], src)
    for k in range(1, len(made)):
        start = k * hop
        assert torch.equal(refs[k], frames[:, start - 1])  # the frame before the window's first frame
        mask = calls[k]["known_mask"]
        assert mask[:, : window - hop].all() and not mask[:, window - hop :].any()
        assert torch.equal(calls[k]["known"][:, : window - hop], frames[:, start : start + window - hop])


@pytest.mark.parametrize("scheduler", [DDIMScheduler(), DDPMScheduler(), DDIMScheduler(eta=0.5), OneStepSampler()])
def test_keyframes_are_exactly_the_given_values(model, scheduler):
    frames = 19
    values = torch.zeros(frames, 70)
    mask = torch.zeros(frames, 70, dtype=torch.bool)
    pose = torch.linspace(-0.5, 0.5, POSE.stop - POSE.start)
    for at in (0, 9, frames - 1):  # start, middle and end at one pose (a loop, and a pose at a given time)
        values[at, POSE], mask[at, POSE] = pose, True
    audio = torch.randn(frames, 12, generator=torch.Generator().manual_seed(4))
    for hop in (8, 4):
        out = sample(model, audio, scheduler=scheduler, hop=hop, known=Known(values, mask))
        assert torch.equal(out[mask], values[mask])
        free = sample(model, audio, scheduler=scheduler, hop=hop)
        # the held frames steer the others through the noisy input; a one-step generator has none (its input is
        # the latent), so there they are only set in the output
        steered = not isinstance(scheduler, OneStepSampler)
        assert torch.allclose(out[~mask], free[~mask]) != steered


def test_bad_hops_are_one_config_error(model):
    audio = torch.randn(10, 12)
    for bad in (0, 9, -1, 2.5, True, "4"):
        with pytest.raises(
            ConfigError, match=r"^hop=.* must be a whole number of frames from 1 to the model's window 8"
        ):
            sample(model, audio, hop=bad)
