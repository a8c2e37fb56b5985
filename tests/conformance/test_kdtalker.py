"""Conformance with the official KDTalker diffusion code: $KDTALKER_REFERENCE/kdtalker (see its README).

The fixture weights (salt from the case set) are written as an official-layout KDTalker.pth and read back through
load_kdtalker. Inputs, seeds, frame counts and paddings come from cases.npz; the tolerances are the README's table
("Recommended tolerances", |a - b| <= atol + rtol |b|), which this folder does not store in machine-readable form.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdtalker.diffusion import (
    DDIMScheduler,
    DDPMScheduler,
    MotionNorm,
    diffusion_loss,
    load_kdtalker,
    pack_motion,
    save_kdtalker,
    unpack_motion,
)
from kdtalker.diffusion.denoiser import relative_position_buckets
from kdtalker.diffusion.sampling import padded_audio, sample_motion, sample_window
from kdtalker.diffusion.smoothing import kalman_smooth
from kdtalker.pipeline.compose import driving_keypoints

pytestmark = pytest.mark.usefixtures("one_thread")

# README "Recommended tolerances": (atol, rtol).
TOL_FORWARD = (1e-4, 1e-4)  # fwd_*, train_xt, train_noise_pred
TOL_LOSS = (1e-6, 1e-5)  # loss scalars, train_aug_mean/std
TOL_SCHEDULE = (1e-7, 1e-6)  # sched_betas, sched_alphas_cumprod
TOL_STEP = (1e-5, 1e-5)  # DDIM / DDPM steps and add_noise in float32
TOL_SAMPLE = (2e-3, 1e-4)  # ddim_out, ddim_traj, glue_window_*, glue_norm_out, glue_short_norm_out
TOL_DENORM_RTOL = 1e-4  # glue_denorm_<k>: atol = 2e-3 * <k>_std
TOL_KALMAN = (1e-6, 1e-6)
TOL_COMPOSE = (1e-3, 1e-4)
SRC_KEYS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


def close(got, ref, tol: tuple[float, float], name: str) -> None:
    got = got.detach().cpu().numpy() if torch.is_tensor(got) else np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), atol=tol[0], rtol=tol[1], err_msg=name)


def t(ref, name: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ref[name]))


@pytest.fixture(scope="module")
def fixture_state(kdtalker_ref) -> dict[str, torch.Tensor]:
    """The official-layout state dict of the case set's fixture weights (salt from cases.npz)."""
    return kdtalker_ref.weights("spec_denoiser.json", salt=str(kdtalker_ref["meta_salt"]))


@pytest.fixture(scope="module")
def model(fixture_state, tmp_path_factory):
    """Fixture weights of the case set -> official-layout KDTalker.pth -> load_kdtalker (strict)."""
    state = fixture_state
    path = tmp_path_factory.mktemp("kdtalker") / "KDTalker.pth"
    torch.save({"model": state, "model_ema": {}, "epoch": 0, "step": 0, "best_val": None}, path)
    return load_kdtalker(path)


@pytest.fixture(scope="module")
def norm(kdtalker_ref) -> MotionNorm:
    return MotionNorm.load(kdtalker_ref.path / "norm.npz")


def test_checkpoint_layout_and_parameter_count(kdtalker_ref, fixture_state, model, tmp_path):
    spec = kdtalker_ref.spec("spec_denoiser.json")
    assert sum(p.numel() for p in model.parameters()) == spec["config"]["param_count_model_parameters"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == spec["config"]["param_count_trainable"]
    path = save_kdtalker(model, tmp_path / "ours.pth")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert list(saved["model"]) == list(spec["shapes"])  # same keys, same order as the official file
    assert {k: list(v.shape) for k, v in saved["model"].items()} == spec["shapes"]
    assert sum(v.numel() for v in saved["model"].values()) == spec["config"]["state_dict_numel"]
    assert saved["model_ema"] == {}
    assert all(torch.equal(saved["model"][k], fixture_state[k]) for k in fixture_state)


def test_forward_and_intermediates(kdtalker_ref, model):
    ref = kdtalker_ref
    num_frames = ref["fwd_x"].shape[1]
    assert torch.equal(relative_position_buckets(num_frames), t(ref, "fwd_relpos_bucket"))
    layer0 = model.layers[0]
    watched = {"inproj": model.input_projection, "l0_res1": layer0.res1, "l0_res2": layer0.res2, "l0_attn": layer0.attn}
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, o)) for n, m in watched.items()]
    hooks.append(model.output_projection.register_forward_pre_hook(lambda _m, i: seen.__setitem__("final", i[0])))
    try:
        with torch.no_grad():
            out = model.forward_tokens(t(ref, "fwd_x"), t(ref, "fwd_t"), t(ref, "fwd_ctx"))
            close(model.time_mlp[0](t(ref, "fwd_t")), ref["fwd_sinusoidal"], TOL_FORWARD, "fwd_sinusoidal")
            close(model.time_embedding(t(ref, "fwd_t")), ref["fwd_temb"], TOL_FORWARD, "fwd_temb")
            close(model.time_rel_pos_bias(num_frames), ref["fwd_relpos_bias"], TOL_FORWARD, "fwd_relpos_bias")
            angles = model.layers[0].attn.fn.fn.rotary_emb.angles(num_frames)
            close(angles, ref["fwd_rotary_angles"], TOL_FORWARD, "fwd_rotary_angles")
    finally:
        for h in hooks:
            h.remove()
    close(out, ref["fwd_out"], TOL_FORWARD, "fwd_out")
    for name in ("inproj", "l0_res1", "l0_res2", "l0_attn", "final"):
        close(seen[name][0], ref[f"fwd_h_{name}_b0"], TOL_FORWARD, f"fwd_h_{name}_b0")


@pytest.mark.parametrize("augmented", [False, True])
def test_training_loss(kdtalker_ref, model, augmented):
    ref = kdtalker_ref
    scheduler = DDIMScheduler()
    noise, steps = t(ref, "train_noise"), t(ref, "train_t")
    x_t = scheduler.add_noise(t(ref, "train_x0"), noise, steps)
    close(x_t, ref["train_xt"], TOL_FORWARD, "train_xt")
    inputs = (t(ref, "train_x0"), t(ref, "train_ref"), t(ref, "train_ori"), t(ref, "train_aud"))
    with torch.no_grad():
        if augmented:
            assert float(ref["train_aug_coin"]) > 1 - 0.7  # the stored coin is one that applies the augmentation
            context = model.context(t(ref, "train_aud"))
            close(context.mean(), ref["train_aug_mean"], TOL_LOSS, "train_aug_mean")
            close(context.std(), ref["train_aug_std"], TOL_LOSS, "train_aug_std")
            losses = diffusion_loss(
                model, scheduler, *inputs, noise=noise, timesteps=steps, audio_noise=t(ref, "train_aug_z")
            )
            prefix = "train_aug_"
        else:
            tokens = model.tokens(x_t, t(ref, "train_ref"), t(ref, "train_ori"))
            eps = model.forward_tokens(tokens, steps, model.context(t(ref, "train_aud")))
            close(eps[:, 2:], ref["train_noise_pred"], TOL_FORWARD, "train_noise_pred")
            losses = diffusion_loss(model, scheduler, *inputs, noise=noise, timesteps=steps, audio_noise_prob=0.0)
            prefix = "train_"
    for key in ("loss", "loss_pose", "loss_exp"):
        close(losses[key], ref[prefix + key], TOL_LOSS, prefix + key)


def test_schedule_and_steps(kdtalker_ref):
    ref = kdtalker_ref
    ddim, ddpm = DDIMScheduler(), DDPMScheduler()
    close(ddim.betas, ref["sched_betas"], TOL_SCHEDULE, "sched_betas")
    close(ddim.alphas_cumprod, ref["sched_alphas_cumprod"], TOL_SCHEDULE, "sched_alphas_cumprod")
    num_steps = len(ref["sched_ddim_timesteps"])
    assert np.array_equal(ddim.set_timesteps(num_steps).numpy(), ref["sched_ddim_timesteps"])
    assert np.array_equal(ddpm.set_timesteps(len(ref["sched_ddpm_timesteps"])).numpy(), ref["sched_ddpm_timesteps"])
    eta = float(ref["sched_ddim_eta"])
    for i, step in enumerate(ref["sched_step_t"].tolist()):
        eps, sample = t(ref, "sched_step_eps")[i], t(ref, "sched_step_sample")[i]
        out = ddim.step(eps, step, sample)
        close(out.prev_sample, ref["sched_ddim_prev"][i], TOL_STEP, f"sched_ddim_prev t={step}")
        close(out.pred_original_sample, ref["sched_ddim_pred_x0"][i], TOL_STEP, f"sched_ddim_pred_x0 t={step}")
        noisy = ddim.step(eps, step, sample, eta=eta, variance_noise=t(ref, "sched_ddim_eta_noise")[i])
        close(noisy.prev_sample, ref["sched_ddim_eta_prev"][i], TOL_STEP, f"sched_ddim_eta_prev t={step}")
        ancestral = ddpm.step(eps, step, sample, variance_noise=t(ref, "sched_ddpm_noise")[i])
        close(ancestral.prev_sample, ref["sched_ddpm_prev"][i], TOL_STEP, f"sched_ddpm_prev t={step}")
    noised = ddim.add_noise(t(ref, "sched_addnoise_x0"), t(ref, "sched_addnoise_noise"), t(ref, "sched_addnoise_t"))
    close(noised, ref["sched_addnoise_out"], TOL_STEP, "sched_addnoise_out")


def test_ddim_window_and_trajectory(kdtalker_ref, model):
    ref = kdtalker_ref
    steps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    out = sample_window(
        model,
        DDIMScheduler(),
        t(ref, "ddim_xT")[None],
        t(ref, "ddim_ref"),
        t(ref, "ddim_ori"),
        t(ref, "ddim_aud"),
        num_inference_steps=50,
        callback=lambda i, _t, x, eps: steps.__setitem__(i, (x[0].clone(), eps[0].clone())),
    )
    close(out[0], ref["ddim_out"], TOL_SAMPLE, "ddim_out")
    for k, i in enumerate(ref["ddim_traj_steps"].tolist()):
        close(steps[i][0], ref["ddim_traj"][k], TOL_SAMPLE, f"ddim_traj step {i}")
    close(steps[0][1], ref["ddim_eps_first"], TOL_FORWARD, "ddim_eps_first")
    close(steps[len(steps) - 1][1], ref["ddim_eps_last"], TOL_SAMPLE, "ddim_eps_last")


def source_tokens(ref, norm: MotionNorm, prefix: str = "glue_src_") -> tuple[torch.Tensor, torch.Tensor]:
    """The official input_x (normalised source motion) and ori (zeros + normalised kp), from the raw kp_info."""
    src = {k: ref[prefix + k] for k in SRC_KEYS}
    input_x = norm.normalize(pack_motion(src["scale"], src["yaw"], src["pitch"], src["roll"], src["t"], src["exp"]))
    return torch.from_numpy(input_x[0]), torch.from_numpy(norm.canonical_token(src["kp"])[0])


@pytest.fixture(scope="module")
def glue(kdtalker_ref, model, norm):
    """One run of the multi-window sampler on the glue case, with each window's ref and output recorded."""
    ref = kdtalker_ref
    input_x, ori = source_tokens(ref, norm)
    windows: list[tuple[torch.Tensor, torch.Tensor]] = []
    motion = sample_motion(
        model,
        DDIMScheduler(),
        t(ref, "glue_aud"),
        input_x,
        ori,
        steps=50,
        noise=t(ref, "glue_xT"),
        window_callback=lambda _k, r, x0: windows.append((r[0].clone(), x0[0].clone())),
        progress=False,
    )
    return {"input_x": input_x, "ori": ori, "windows": windows, "motion": motion}


def test_glue_inputs_and_windows(kdtalker_ref, glue):
    ref = kdtalker_ref
    close(glue["input_x"][None], ref["glue_input_x"], TOL_FORWARD, "glue_input_x")
    close(glue["ori"][None], ref["glue_ori_kp"], TOL_FORWARD, "glue_ori_kp")
    window = ref["glue_xT"].shape[1]
    _, padding = padded_audio(t(ref, "glue_aud")[None], window)
    assert padding == int(ref["glue_padding_size"])
    assert len(glue["windows"]) == len(ref["glue_window_start"]) == len(ref["glue_xT"])
    close(torch.stack([r for r, _ in glue["windows"]]), ref["glue_window_ref"], TOL_SAMPLE, "glue_window_ref")
    close(torch.stack([x for _, x in glue["windows"]]), ref["glue_window_out"], TOL_SAMPLE, "glue_window_out")


def test_glue_output_and_denormalisation(kdtalker_ref, glue, norm):
    ref = kdtalker_ref
    close(glue["motion"], ref["glue_norm_out"], TOL_SAMPLE, "glue_norm_out")
    ours = unpack_motion(norm.denormalize(glue["motion"]).numpy())
    exact = unpack_motion(norm.denormalize(ref["glue_norm_out"]))
    stds = unpack_motion(norm.std)
    for key in ("scale", "yaw", "pitch", "roll", "t", "exp"):
        stored = ref[f"glue_denorm_{key}"]
        close(exact[key].reshape(stored.shape), stored, (0.0, 0.0), f"glue_denorm_{key} from the stored glue_norm_out")
        atol = 2e-3 * float(np.max(stds[key]))
        close(ours[key].reshape(stored.shape), stored, (atol, TOL_DENORM_RTOL), f"glue_denorm_{key}")


def test_glue_short_audio_official_quirk(kdtalker_ref, model, norm):
    ref = kdtalker_ref
    input_x, ori = source_tokens(ref, norm)
    audio = t(ref, "glue_short_aud")
    window = model.window
    padded, padding = padded_audio(audio[None], window, official_short_audio=True)
    assert padding == int(ref["glue_short_padding_size"])
    assert padded.shape[1] == ref["glue_short_xT"].shape[1]  # the official single window is shorter than 64
    motion = sample_motion(
        model,
        DDIMScheduler(),
        audio,
        input_x,
        ori,
        steps=50,
        window=window,
        noise=t(ref, "glue_short_xT"),
        official_short_audio=True,
        progress=False,
    )
    assert motion.shape[0] == int(ref["glue_short_num_frames"])
    close(motion, ref["glue_short_norm_out"], TOL_SAMPLE, "glue_short_norm_out")


def test_kalman_smoothing(kdtalker_ref):
    ref = kdtalker_ref
    for key in ("pitch", "yaw", "roll", "t", "exp"):
        assert np.array_equal(ref[f"kalman_in_{key}"], ref[f"glue_denorm_{key}"])
        out = kalman_smooth(ref[f"kalman_in_{key}"], transition_cov=0.05, observation_cov=0.001)
        assert out.dtype == np.float64
        close(out, ref[f"kalman_out_{key}"], TOL_KALMAN, f"kalman_out_{key}")


@pytest.mark.parametrize("mode,name", [("absolute", "compose_abs_xd"), ("relative", "compose_rel_xd")])
def test_composition(kdtalker_ref, mode, name):
    ref = kdtalker_ref
    smoothed = {k: ref[f"kalman_out_{k}"].astype(np.float32) for k in ("yaw", "pitch", "roll", "t", "exp")}
    motion = pack_motion(ref["glue_denorm_scale"], **smoothed)
    source = {k: ref[f"glue_src_{k}"] for k in SRC_KEYS}
    close(driving_keypoints(source, motion, mode=mode), ref[name], TOL_COMPOSE, name)
