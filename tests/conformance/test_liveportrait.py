"""Conformance with the official LivePortrait code: $KDTALKER_REFERENCE/liveportrait (see its README).

Fixture weights are written as official-layout .pth files and read back through the real loaders; every
tolerance, seed and the salt come from the case set's manifest / cases.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from kdtalker.renderer import LivePortraitRenderer, headpose_to_degrees, rotation_matrix, transform_keypoints
from kdtalker.renderer import checkpoints as ckpt
from kdtalker.renderer.backends import GRAPH_BACKENDS
from kdtalker.renderer.stitching import apply_stitching, ratio_input, retarget_eye, retarget_lip, stitching_input


def check(ref, name: str, got) -> None:
    """Compare a full-size result with the stored array (whole, or its .sub elements + mean/std/absmax)."""
    entry = ref.manifest["arrays"][name]
    tol = entry["tolerance"]
    got = np.asarray(torch.as_tensor(got).detach().cpu().double().numpy() if torch.is_tensor(got) else got, np.float64)
    assert list(got.shape) == list(entry["shape"]), f"{name}: shape {got.shape} != {entry['shape']}"
    if entry["stored"] == "full":
        pairs = [(got, ref[name])]
    else:
        assert list(got.shape) == list(ref[name + ".shape"])
        stats = np.array([got.mean(), got.std(), np.abs(got).max()])
        ref_stats = np.array([ref[name + ".mean"], ref[name + ".std"], ref[name + ".absmax"]])
        pairs = [(got.reshape(-1)[:: int(ref[name + ".sub_stride"])], ref[name + ".sub"]), (stats, ref_stats)]
    for g, r in pairs:
        np.testing.assert_allclose(g, np.asarray(r, np.float64), rtol=tol["rtol"], atol=tol["atol"], err_msg=name)


def regenerate(ref, name: str) -> torch.Tensor:
    """The inputs too large to store, rebuilt from their seed (and confirmed against their stored samples)."""
    shape = ref.manifest["arrays"][name]["shape"]
    x = np.random.RandomState(int(ref[name + ".seed"])).standard_normal(shape).astype(np.float32)
    check(ref, name, x)
    return torch.from_numpy(x)


def t(ref, name: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ref[name]))


@contextmanager
def capture(modules: dict[str, torch.nn.Module], pre: dict[str, torch.nn.Module] | None = None):
    """Record module outputs (and, for `pre`, first inputs) by name while the block runs."""
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, o)) for n, m in modules.items()]
    handles += [
        m.register_forward_pre_hook(lambda _m, i, n=n: seen.__setitem__(n, i[0])) for n, m in (pre or {}).items()
    ]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@pytest.fixture(scope="module")
def checkpoint_dir(liveportrait_ref, tmp_path_factory):
    """The fixture weights saved as the official files: flat base models, nested stitching dict with DDP keys."""
    root = tmp_path_factory.mktemp("liveportrait")
    (root / "base_models").mkdir()
    (root / "retargeting_models").mkdir()
    specs = liveportrait_ref.manifest["specs"]
    for name, rel in ckpt.BASE_FILES.items():
        torch.save(liveportrait_ref.weights(specs[name]), root / rel)
    nested: dict[str, dict] = {}
    for key, value in liveportrait_ref.weights(specs["stitching_retargeting_module"]).items():
        entry, rest = key.split(".", 1)
        nested.setdefault(entry, {})["module." + rest] = value
    torch.save(nested, root / ckpt.STITCHING_FILE)
    return root


@pytest.fixture(scope="module")
def renderer(checkpoint_dir) -> LivePortraitRenderer:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return LivePortraitRenderer.from_checkpoints(checkpoint_dir, device="cpu", dtype=torch.float32)


def test_appearance_feature_extractor(liveportrait_ref, renderer):
    ref = liveportrait_ref
    net = renderer.appearance
    with capture({"first": net.first, "second": net.second}) as seen:
        f_s = renderer.appearance_features(t(ref, "appearance_feature_extractor.in.x"))
    check(ref, "appearance_feature_extractor.out.f_s", f_s)
    check(ref, "appearance_feature_extractor.debug.first", seen["first"])
    check(ref, "appearance_feature_extractor.debug.second", seen["second"])


def test_motion_extractor_and_kp_info(liveportrait_ref, renderer):
    ref = liveportrait_ref
    net = renderer.motion.detector
    x = t(ref, "motion_extractor.in.x")
    with (
        capture({"stage0": net.stages[0], "stage3": net.stages[3], "features": net.norm}) as seen,
        torch.inference_mode(),
    ):
        out = renderer.motion(x)
    for name in ("kp", "exp", "t", "scale", "pitch", "yaw", "roll"):
        check(ref, f"motion_extractor.out.{name}", out[name])
    for name in ("stage0", "stage3", "features"):
        check(ref, f"motion_extractor.debug.{name}", seen[name])
    info = renderer.keypoint_info(x)
    for name in ("kp", "exp", "t", "scale", "pitch", "yaw", "roll"):
        check(ref, f"wrapper.get_kp_info.out.{name}", info[name])


def test_keypoint_math(liveportrait_ref):
    ref = liveportrait_ref
    check(
        ref,
        "wrapper.headpose_pred_to_degree.out.degree",
        headpose_to_degrees(t(ref, "wrapper.headpose_pred_to_degree.in.pred")),
    )
    rot = rotation_matrix(*(t(ref, f"wrapper.get_rotation_matrix.in.{a}") for a in ("pitch", "yaw", "roll")))
    check(ref, "wrapper.get_rotation_matrix.out.rot", rot)
    info = {n: t(ref, f"wrapper.get_kp_info.out.{n}") for n in ("kp", "exp", "t", "scale", "pitch", "yaw", "roll")}
    refined = transform_keypoints(
        info["kp"], info["pitch"], info["yaw"], info["roll"], info["exp"], info["scale"], info["t"]
    )
    check(ref, "wrapper.transform_keypoint.out.x_refined", refined)
    raw = {n: t(ref, f"motion_extractor.out.{n}") for n in ("kp", "exp", "t", "scale", "pitch", "yaw", "roll")}
    x_raw = transform_keypoints(raw["kp"], raw["pitch"], raw["yaw"], raw["roll"], raw["exp"], raw["scale"], raw["t"])
    check(ref, "wrapper.transform_keypoint.out.x_raw", x_raw)


def test_stitching_retargeting(liveportrait_ref, renderer):
    ref = liveportrait_ref
    p = "stitching_retargeting_module"
    kp_s, kp_d = t(ref, f"{p}.in.kp_source"), t(ref, f"{p}.in.kp_driving")
    eye_ratio, lip_ratio = t(ref, f"{p}.in.eye_ratio"), t(ref, f"{p}.in.lip_ratio")
    nets = renderer.retargeting
    inputs = {
        "stitching": stitching_input(kp_s, kp_d),
        "lip": ratio_input(kp_s, lip_ratio),
        "eye": ratio_input(kp_s, eye_ratio),
    }
    with torch.inference_mode():
        for name, x in inputs.items():
            check(ref, f"{p}.{name}.in.x", x)
            check(ref, f"{p}.{name}.out.y", nets[name](x))
        check(ref, "wrapper.stitching.out.kp_driving_new", apply_stitching(kp_s, kp_d, nets["stitching"]))
        check(ref, "wrapper.retarget_eye.out.delta", retarget_eye(kp_s, eye_ratio, nets["eye"]))
        check(ref, "wrapper.retarget_lip.out.delta", retarget_lip(kp_s, lip_ratio, nets["lip"]))
    check(ref, "wrapper.stitching.out.kp_driving_new", renderer.stitch(kp_s, kp_d))
    check(ref, "wrapper.retarget_eye.out.delta", renderer.retarget_eye(kp_s, eye_ratio))
    check(ref, "wrapper.retarget_lip.out.delta", renderer.retarget_lip(kp_s, lip_ratio))


def test_warping_module(liveportrait_ref, renderer):
    ref = liveportrait_ref
    net = renderer.warping
    dense = net.dense_motion_network
    feature = regenerate(ref, "warping_module.in.feature_3d")
    kp_s, kp_d = t(ref, "warping_module.in.kp_source"), t(ref, "warping_module.in.kp_driving")
    with capture(
        {"compressed": dense.norm, "hourglass": dense.hourglass, "dense": dense, "third": net.third},
        pre={"warped": net.third},
    ) as seen:
        with torch.inference_mode():
            out = net(feature, kp_driving=kp_d, kp_source=kp_s)
    for name in ("out", "occlusion_map", "deformation"):
        check(ref, f"warping_module.out.{name}", out[name])
    seen["mask"] = seen["dense"]["mask"]
    for name in ("compressed", "hourglass", "mask", "warped", "third"):
        check(ref, f"warping_module.debug.{name}", seen[name])


def test_spade_generator(liveportrait_ref, renderer):
    ref = liveportrait_ref
    net = renderer.decoder
    names = ["fc", "G_middle_0", "G_middle_5", "up_0", "up_1"]
    feature = regenerate(ref, "spade_generator.in.feature")
    with capture({n: getattr(net, n) for n in names} | {"logits": net.conv_img}) as seen, torch.inference_mode():
        image = net(feature)
    check(ref, "spade_generator.out.out", image)
    for name in names + ["logits"]:
        check(ref, f"spade_generator.debug.{name}", seen[name])
    sigmas = net.spectral_sigmas()
    check(ref, "spade_generator.debug.sigma", torch.stack([sigmas[n] for n in ref.manifest["spade_sigma_order"]]))


def test_end_to_end_chain(liveportrait_ref, renderer):
    ref = liveportrait_ref
    image = t(ref, "e2e.in.image")
    f_s = renderer.appearance_features(image)
    check(ref, "e2e.f_s", f_s)
    info = renderer.keypoint_info(image)
    for name, value in info.items():
        check(ref, f"e2e.kp_info.{name}", value)
    x_s = renderer.transform(info)
    check(ref, "e2e.x_s", x_s)
    edited = dict(info)
    for angle in ("pitch", "yaw", "roll"):
        edited[angle] = info[angle] + t(ref, f"e2e.in.d_{angle}")
    edited["exp"] = info["exp"] + t(ref, "e2e.in.delta_exp")
    edited["scale"] = info["scale"] * t(ref, "e2e.in.scale_mult")
    edited["t"] = info["t"] + t(ref, "e2e.in.d_t")
    x_d_raw = renderer.transform(edited)
    check(ref, "e2e.x_d_raw", x_d_raw)
    x_d = renderer.stitch(x_s, x_d_raw)
    check(ref, "e2e.x_d", x_d)
    with capture({"warp": renderer.warping, "logits": renderer.decoder.conv_img}) as seen:
        frames = renderer.render(renderer.source(f_s, x_s), x_d)
    check(ref, "e2e.out.image", frames)
    check(ref, "e2e.out.occlusion_map", seen["warp"]["occlusion_map"])
    check(ref, "e2e.out.deformation", seen["warp"]["deformation"])
    check(ref, "e2e.debug.warp_out", seen["warp"]["out"])
    check(ref, "e2e.debug.logits", seen["logits"])


@pytest.mark.slow
@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_end_to_end_frames_of_each_backend(liveportrait_ref, checkpoint_dir, backend):
    """renderer.backend=onnxruntime|openvino: the official e2e frame through the same render API.

    The graph comes from the test run's graph cache (tests/conftest.py): the fixture weights are the ones of the
    end-to-end tests' checkpoint folder, so the whole run exports this graph once, whichever test needs it first."""
    ref = liveportrait_ref
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "kdtalker" / "graphs"
    graph_renderer = LivePortraitRenderer.from_checkpoints(
        checkpoint_dir, device="cpu", dtype=torch.float32, backend=backend, graph_cache=cache
    )
    image = t(ref, "e2e.in.image")
    source = graph_renderer.encode_source(image)
    frames = graph_renderer.render(source, t(ref, "e2e.x_d"))
    check(ref, "e2e.out.image", frames)
