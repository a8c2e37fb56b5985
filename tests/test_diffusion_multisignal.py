"""The multi-signal denoiser: the official weights load into it, its audio mode is the official model, the region
mask and gates decide what the driving motion may move, mask-drop draws what training keeps, guidance is eq. (2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdtalker.diffusion import (
    REGIONS,
    DDIMScheduler,
    Denoiser,
    Guidance,
    MaskDrop,
    MultiSignalDenoiser,
    diffusion_loss,
    region_mask,
)
from kdtalker.diffusion.guidance import NO_GUIDANCE, guided_condition
from kdtalker.diffusion.multisignal import BRANCH, REGION_CHANNELS
from kdtalker.diffusion.sampling import sample_motion, sample_window
from kdtalker.errors import CheckpointError, ConfigError
from kdtalker.training.trainer import load_model_state

SMALL = dict(width=32, depth=2, heads=2, head_dim=16, time_dim=8, audio_dim=12, window=8)


def trained_branch(model: MultiSignalDenoiser, seed: int = 1) -> MultiSignalDenoiser:
    """Give the zero-initialised motion branch random weights and gates, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(BRANCH):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


@pytest.fixture(scope="module")
def small() -> MultiSignalDenoiser:
    torch.manual_seed(0)
    m = MultiSignalDenoiser(motion_features=8, **SMALL)
    torch.nn.init.normal_(m.output_projection.weight, std=0.1)
    return trained_branch(m).eval()


def inputs(seed: int = 0, batch: int = 2, frames: int = 8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, 70, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    audio = torch.randn(batch, frames, 12, generator=g)
    ref, ori = torch.randn(batch, 70, generator=g), torch.randn(batch, 70, generator=g)
    driving = torch.randn(batch, frames, 70, generator=g)
    return x, t, audio, ref, ori, driving


@pytest.fixture(scope="module")
def official(kdtalker_ref, tmp_path_factory):
    """The case set's fixture weights as an official KDTalker.pth, loaded into both models."""
    state = kdtalker_ref.weights("spec_denoiser.json", salt=str(kdtalker_ref["meta_salt"]))
    path = tmp_path_factory.mktemp("kdtalker") / "KDTalker.pth"
    torch.save({"model": state, "model_ema": {}, "epoch": 0, "step": 0, "best_val": None}, path)
    return path, Denoiser.from_pretrained(path), MultiSignalDenoiser.from_pretrained(path)


def test_official_checkpoint_loads_and_audio_mode_samples_the_official_motion(kdtalker_ref, official):
    path, plain, multi = official
    ref = kdtalker_ref
    branch = {k: v for k, v in multi.state_dict().items() if k.startswith(BRANCH)}
    assert branch and all(torch.count_nonzero(v) == 0 for k, v in branch.items() if "motion_modulation" in k)
    plain_state = plain.state_dict()
    assert all(torch.equal(v, plain_state[k]) for k, v in multi.state_dict().items() if k in plain_state)
    assert set(multi.state_dict()) - set(plain_state) == set(branch)

    def window(model, **signals):
        args = [torch.from_numpy(np.asarray(ref[k])) for k in ("ddim_xT", "ddim_ref", "ddim_ori", "ddim_aud")]
        return sample_window(model, DDIMScheduler(), args[0][None], *args[1:], num_inference_steps=10, **signals)

    want = window(plain)
    assert torch.equal(window(multi), want)
    # at initialisation the driving motion cannot change anything; once trained, only where the mask lets it
    driving = torch.randn(1, want.shape[1], 70, generator=torch.Generator().manual_seed(3))
    assert torch.equal(window(multi, driving=driving, regions=region_mask(REGIONS)[None]), want)
    trained_branch(multi)
    try:
        assert torch.equal(window(multi), want)
        assert torch.equal(window(multi, driving=driving, regions=torch.zeros(1, len(REGIONS))), want)
        assert not torch.allclose(window(multi, driving=driving, regions=region_mask(REGIONS)[None]), want)
    finally:
        multi.load_state_dict(MultiSignalDenoiser.from_pretrained(path).state_dict())

    # train.init_from takes the official file the same way; a file with half a branch is refused
    fresh = MultiSignalDenoiser()
    load_model_state(fresh, torch.load(path, weights_only=True), str(path))
    assert torch.equal(fresh.input_projection.weight, plain.input_projection.weight)
    # a trained multi-signal model round-trips through the official layout, branch included
    trained_branch(fresh).save_pretrained(path.parent / "multi.pth")
    again = MultiSignalDenoiser.from_pretrained(path.parent / "multi.pth")
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in again.state_dict().items())
    assert torch.load(path.parent / "multi.pth", weights_only=True)["model"]["point_model.model.region_gates"].shape
    partial = {k: v for k, v in multi.state_dict().items() if not k.startswith("region_gates")}
    with pytest.raises(CheckpointError, match="missing keys.*region_gates"):
        fresh.load_state(partial, "a damaged multi-signal checkpoint")


def test_region_mask_decides_which_driving_channels_act(small):
    x, t, audio, ref, ori, driving = inputs()

    def eps(driving, regions):
        return small(x, t, audio, ref, ori, driving=driving, regions=regions)

    backbone = small(x, t, audio, ref, ori)
    nothing = torch.zeros(2, len(REGIONS))
    assert torch.equal(eps(driving, nothing), backbone)
    pose_only = region_mask(["pose"]).expand(2, -1)
    changed = driving.clone()
    for region in REGIONS:  # every channel outside the pose is ignored through a pose-only mask
        if region != "pose":
            changed[..., REGION_CHANNELS[region]] += 5.0
    assert torch.equal(eps(changed, pose_only), eps(driving, pose_only))
    moved = driving.clone()
    moved[..., REGION_CHANNELS["pose"]] += 1.0
    assert not torch.allclose(eps(moved, pose_only), eps(driving, pose_only))
    assert not torch.allclose(eps(driving, pose_only), backbone)
    # the scale channel is no driving signal in any region
    scaled = driving.clone()
    scaled[..., 0] += 3.0
    every = region_mask(REGIONS).expand(2, -1)
    assert torch.equal(eps(scaled, every), eps(driving, every))
    # a mask per sample: sample 0 driven, sample 1 not
    mixed = torch.stack([region_mask(REGIONS), torch.zeros(len(REGIONS))])
    out = eps(driving, mixed)
    assert torch.equal(out[1], backbone[1]) and not torch.allclose(out[0], backbone[0])
    with pytest.raises(ConfigError, match="unknown motion region"):
        region_mask(["mouth"])


def test_gates_switch_a_region_off(small):
    x, t, audio, ref, ori, driving = inputs(1)
    every = region_mask(REGIONS).expand(2, -1)
    moved = driving.clone()
    moved[..., REGION_CHANNELS["eyes"]] += 1.0
    gates = small.region_gates.detach().clone()
    try:
        with torch.no_grad():
            small.region_gates[:, REGIONS.index("eyes")] = 0.0
        assert torch.equal(
            small(x, t, audio, ref, ori, driving=moved, regions=every),
            small(x, t, audio, ref, ori, driving=driving, regions=every),
        )
        with torch.no_grad():
            small.region_gates[0, REGIONS.index("eyes")] = 1.0  # one block's gate open again: the eyes act
        assert not torch.allclose(
            small(x, t, audio, ref, ori, driving=moved, regions=every),
            small(x, t, audio, ref, ori, driving=driving, regions=every),
        )
    finally:
        with torch.no_grad():
            small.region_gates.copy_(gates)


def test_mask_drop_draws_the_configured_signal_mix():
    # categories: audio dropped 0.2, motion dropped 0.3, both 0.1, both kept 0.4; each kept region off with 0.25
    drop = MaskDrop(audio=0.2, motion=0.3, both=0.1, region=0.25, lips_from_audio=True)
    keep_audio, regions = drop.draw(40000, torch.Generator().manual_seed(0))
    keep_audio, regions = keep_audio.bool(), regions.bool()
    on = {r: regions[:, i] for i, r in enumerate(REGIONS)}

    def rate(mask) -> float:
        return mask.float().mean().item()

    assert abs(rate(~keep_audio) - 0.3) < 0.01
    for region in ("eyes", "expression", "pose"):  # motion kept (0.6), region not dropped (0.75)
        assert abs(rate(on[region]) - 0.6 * 0.75) < 0.01
    assert abs(rate(on["eyes"] & on["pose"]) - 0.6 * 0.75**2) < 0.01  # regions drop independently
    assert abs(rate(on["lips"]) - 0.2 * 0.75) < 0.01  # the driving lips only where the audio is dropped
    assert not (keep_audio & on["lips"]).any()
    assert abs(rate(keep_audio & ~regions.any(1)) - (0.3 + 0.4 * 0.25**3)) < 0.01
    free = MaskDrop(audio=0.0, motion=0.0, both=0.0, region=0.0, lips_from_audio=False).draw(10)
    assert free[0].eq(1).all() and free[1].eq(1).all()
    with pytest.raises(ConfigError, match="exceeds 1"):
        MaskDrop(audio=0.5, motion=0.4, both=0.2, region=0.0, lips_from_audio=True)
    with pytest.raises(ConfigError, match="probability"):
        MaskDrop(audio=-0.1, motion=0.0, both=0.0, region=0.0, lips_from_audio=True)


def test_loss_drives_with_the_window_itself_and_drops_audio_as_zeros(small):
    x0, t, audio, ref, ori, _ = inputs(2)
    scheduler = DDIMScheduler()
    noise = torch.randn_like(x0, generator=torch.Generator().manual_seed(5))
    keep = torch.tensor([0.0, 1.0])
    regions = torch.stack([region_mask(REGIONS), region_mask(["pose"])])
    out = diffusion_loss(small, scheduler, x0, ref, ori, audio, noise=noise, timesteps=t, signals=(keep, regions))
    x_t = scheduler.add_noise(x0, noise, t)
    context = small.context(audio) * keep[:, None, None]
    want = small(x_t, t, context, ref, ori, driving=x0, regions=regions)
    assert torch.equal(out["loss"], torch.nn.functional.mse_loss(want, noise))
    other = audio.clone()
    other[0] += 4.0  # sample 0 has its audio dropped: another audio gives the same loss
    again = diffusion_loss(small, scheduler, x0, ref, ori, other, noise=noise, timesteps=t, signals=(keep, regions))
    assert torch.equal(again["loss"], out["loss"])
    # mask-drop draws after the loss's own draws: a seed gives the noise and steps it gives without mask-drop
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    drop = MaskDrop(audio=0.2, motion=0.2, both=0.1, region=0.1, lips_from_audio=True)
    diffusion_loss(small, scheduler, x0, ref, ori, audio, generator=g1, mask_drop=drop)
    diffusion_loss(small, scheduler, x0, ref, ori, audio, generator=g2)
    drop.draw(2, g2)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_guidance_is_the_nested_rule_and_one_is_none(small):
    _, _, audio, ref, ori, driving = inputs(3)
    regions = region_mask(["eyes", "expression", "pose"]).expand(2, -1)
    x_T = torch.randn(2, 8, 70, generator=torch.Generator().manual_seed(4))
    seen: dict[str, torch.Tensor] = {}

    def first_eps(key, **kw):
        sample_window(
            small,
            DDIMScheduler(),
            x_T,
            ref,
            ori,
            kw.pop("audio", audio),
            num_inference_steps=2,
            callback=lambda i, _t, _x, eps: seen.__setitem__(key, eps.clone()) if i == 0 else None,
            **kw,
        )
        return seen[key]

    t0 = torch.full((2,), int(DDIMScheduler().set_timesteps(2)[0]), dtype=torch.long)
    silent = torch.zeros_like(audio)
    with torch.no_grad():
        e00 = small(x_T, t0, silent, ref, ori)
        e0m = small(x_T, t0, silent, ref, ori, driving=driving, regions=regions)
        eam = small(x_T, t0, audio, ref, ori, driving=driving, regions=regions)
        ea0 = small(x_T, t0, audio, ref, ori)
    s_a, s_m = 2.5, 1.5
    got = first_eps("both", driving=driving, regions=regions, guidance=Guidance(audio=s_a, motion=s_m))
    want = e00 + s_m * (e0m - e00) + s_a * (eam - e0m)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
    got = first_eps("audio", guidance=Guidance(audio=s_a, motion=1.0))
    np.testing.assert_allclose(got.numpy(), (e00 + s_a * (ea0 - e00)).numpy(), rtol=1e-5, atol=1e-5)
    got = first_eps("motion", audio=None, driving=driving, regions=regions, guidance=Guidance(audio=1.0, motion=s_m))
    np.testing.assert_allclose(got.numpy(), (e00 + s_m * (e0m - e00)).numpy(), rtol=1e-5, atol=1e-5)
    # s = 1 is no guidance: one pass, the conditional epsilon exactly
    assert torch.equal(first_eps("none", driving=driving, regions=regions, guidance=NO_GUIDANCE), eam)
    assert Guidance(1.0, 1.0).terms(True, True) == [(True, True, 1.0)]
    assert Guidance(2.0, 1.0).terms(True, True) == [(False, True, -1.0), (True, True, 2.0)]
    # s = 0 ignores the signal: the audio-free model
    assert torch.allclose(first_eps("zero", guidance=Guidance(audio=0.0, motion=1.0)), e00)


def test_guidance_and_motion_need_a_model_that_was_trained_for_them(small):
    torch.manual_seed(0)
    plain = Denoiser(**SMALL).eval()
    _, _, audio, ref, ori, driving = inputs(4)
    with pytest.raises(ConfigError, match="kdtalker_multisignal"):
        guided_condition(plain, audio[:1], guidance=Guidance(audio=2.0, motion=1.0))
    with pytest.raises(ConfigError, match="kdtalker_multisignal"):
        guided_condition(plain, audio[:1], driving[:1], region_mask(REGIONS)[None])
    with pytest.raises(ConfigError, match="guidance.motion"):
        guided_condition(small, audio[:1], guidance=Guidance(audio=1.0, motion=2.0))
    with pytest.raises(ConfigError, match="guidance.audio"):
        guided_condition(small, None, driving[:1], region_mask(REGIONS)[None], Guidance(audio=3.0, motion=1.0))
    with pytest.raises(ConfigError, match=">= 0"):
        Guidance(audio=-1.0, motion=1.0).validate()
    # motion only: the utterance is as long as the driving motion
    out = sample_motion(
        small,
        DDIMScheduler(),
        None,
        ref[0],
        ori[0],
        steps=2,
        driving=driving[0, :5],
        regions=region_mask(REGIONS),
        progress=False,
    )
    assert out.shape == (5, 70) and torch.isfinite(out).all()
