"""Conformance with the official Face-vid2vid code: $KDTALKER_REFERENCE/facevid2vid (see its README).

The fixture weights are written in both released layouts (SadTalker's flat safetensors, the re-implementation's
.pth.tar trainer checkpoint) and read back through the real loaders. Salt, seeds, tolerances and the generators'
mask floor come from the case set's manifest.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kdtalker.errors import CheckpointError
from kdtalker.facevid2vid import headpose_to_degrees, load_networks, read_states, rotation_matrix, transform_keypoints

ALL_PARTS = ("kp_detector", "he_estimator", "generator")


def check(ref, name: str, got: torch.Tensor) -> None:
    """Compare a full-size result with the stored array (whole, or its .sub elements + mean/std/absmax)."""
    entry = ref.manifest["arrays"][name]
    got = got.detach().double().numpy()
    assert list(got.shape) == entry["shape"], name
    if entry["stored"] == "full":
        pairs = [(got, ref[name])]
    else:
        stats = np.array([got.mean(), got.std(), np.abs(got).max()])
        pairs = [(got.reshape(-1)[:: entry["sub_stride"]], ref[name + ".sub"]), (stats, ref[name + ".stats"])]
    absmax = float(np.abs(pairs[0][1]).max())
    atol = entry["tolerance"]["atol_over_absmax"] * absmax
    for g, r in pairs:
        np.testing.assert_allclose(
            g, np.asarray(r, np.float64), rtol=entry["tolerance"]["rtol"], atol=atol, err_msg=name
        )


def seeded_input(ref, name: str) -> torch.Tensor:
    """An input stored as its seed, rebuilt by the manifest's rule and confirmed against its stored mean/std."""
    entry = ref.manifest["arrays"][name]
    assert entry["rule"] == "np.random.RandomState(seed).uniform(0, 1, shape).astype(np.float32)"
    x = np.random.RandomState(int(ref[name + ".seed"])).uniform(0, 1, entry["shape"]).astype(np.float32)
    np.testing.assert_allclose(
        [x.mean(dtype=np.float64), x.std(dtype=np.float64)], ref[name + ".stats"][:2], rtol=1e-12
    )
    return torch.from_numpy(x)


def stored(ref, name: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ref[name]))


def configs(ref, case: str = "generator") -> dict:
    """Network configs from the specs (facerender.yaml), with the dense-motion mask floor of `case`'s official code."""
    out = {}
    for part in ALL_PARTS:
        config = ref.spec(ref.manifest["specs"][part])["config"]
        out["common"] = config["common"]
        out[part] = dict(config[part])
    dense = {**out["generator"]["dense_motion_params"], "mask_floor": ref.manifest["mask_floor"][case]}
    out["generator"] = {**out["generator"], "dense_motion_params": dense}
    return out


@pytest.fixture(scope="module")
def sadtalker(facevid2vid_ref, facevid2vid_files) -> dict[str, torch.nn.Module]:
    """The three networks from the safetensors file, with SadTalker's mask floor."""
    return load_networks(facevid2vid_files["safetensors"], configs(facevid2vid_ref), ALL_PARTS, "cpu", torch.float32)


@pytest.fixture(scope="module")
def reimpl(facevid2vid_ref, facevid2vid_files) -> dict[str, torch.nn.Module]:
    """The three networks from the .pth.tar file, with the re-implementation's mask floor."""
    return load_networks(
        facevid2vid_files["pth"], configs(facevid2vid_ref, "reimpl_generator"), ALL_PARTS, "cpu", torch.float32
    )


def test_both_layouts_load_every_tensor_unchanged(facevid2vid_states, sadtalker, reimpl):
    states = facevid2vid_states
    for part in ALL_PARTS:
        for nets in (sadtalker, reimpl):
            loaded = nets[part].state_dict()
            assert sorted(loaded) == sorted(states[part])
            assert all(torch.equal(loaded[k], v) for k, v in states[part].items()), part
            assert not nets[part].training


def test_keypoint_detector(facevid2vid_ref, sadtalker):
    with torch.no_grad():
        got = sadtalker["kp_detector"](seeded_input(facevid2vid_ref, "kp_detector.in.image"))
    check(facevid2vid_ref, "kp_detector.out.value", got)


def test_head_expression_estimator(facevid2vid_ref, reimpl):
    with torch.no_grad():  # from the .pth.tar (the loaded tensors equal the safetensors' ones, tested above)
        out = reimpl["he_estimator"](seeded_input(facevid2vid_ref, "he_estimator.in.image"))
    for key in ("yaw", "pitch", "roll", "t", "exp"):
        check(facevid2vid_ref, f"he_estimator.out.{key}", out[key])


@pytest.mark.parametrize(
    ("case", "layout", "keys"),
    [
        ("generator", "sadtalker", ("prediction", "mask", "occlusion_map", "deformation")),
        ("reimpl_generator", "reimpl", ("prediction", "mask")),
    ],
)
def test_generator(facevid2vid_ref, case, layout, keys, request):
    ref = facevid2vid_ref
    generator = request.getfixturevalue(layout)["generator"]
    assert generator.dense_motion_network.mask_floor == ref.manifest["mask_floor"][case]
    image = seeded_input(ref, "generator.in.image")
    with torch.no_grad():
        out = generator(image, stored(ref, "generator.in.kp_driving"), stored(ref, "generator.in.kp_source"))
    for key in keys:
        check(ref, f"{case}.out.{key}", out[key])


def test_mask_floor_changes_the_frame(facevid2vid_ref):
    """The case set exercises the floor: SadTalker's and the re-implementation's frames differ beyond tolerance."""
    ref = facevid2vid_ref
    a, b = ref["generator.out.prediction.sub"], ref["reimpl_generator.out.prediction.sub"]
    tol = ref.manifest["arrays"]["generator.out.prediction"]["tolerance"]["atol_over_absmax"]
    assert np.abs(a - b).max() > 10 * tol * np.abs(a).max()


def test_keypoint_math(facevid2vid_ref):
    ref = facevid2vid_ref
    check(ref, "keypoints.out.degrees", headpose_to_degrees(stored(ref, "keypoints.in.logits")))
    angles = [stored(ref, f"keypoints.in.{k}") for k in ("yaw", "pitch", "roll")]
    check(ref, "keypoints.out.rotation", rotation_matrix(*angles))
    degrees = [headpose_to_degrees(stored(ref, f"keypoints.in.{k}_logits")) for k in ("yaw", "pitch", "roll")]
    t = stored(ref, "keypoints.in.t") * torch.tensor([0.0, 1.0, 0.0])  # SadTalker's inference keeps only t_y
    got = transform_keypoints(stored(ref, "keypoints.in.kp"), *degrees, t, stored(ref, "keypoints.in.exp"))
    check(ref, "keypoints.out.transformed", got)


def test_missing_part_is_named(facevid2vid_ref, facevid2vid_states, tmp_path):
    path = tmp_path / "no_head_pose.safetensors"
    save_file({"kp_extractor." + k: v for k, v in facevid2vid_states["kp_detector"].items()}, str(path))
    assert set(read_states(path)) == {"kp_detector"}
    with pytest.raises(CheckpointError, match="no he_estimator"):
        load_networks(path, configs(facevid2vid_ref), ("he_estimator",), "cpu", torch.float32)


def test_bad_files_give_one_clear_error(facevid2vid_ref, tmp_path):
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match="could not be read as a safetensors file"):
        read_states(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        read_states(tmp_path / "absent.safetensors")
    other = tmp_path / "other.pth.tar"
    torch.save({"model": {"w": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="holds none of the Face-vid2vid networks"):
        read_states(other)
    wrong = tmp_path / "wrong.pth.tar"
    torch.save({"he_estimator": {"fc_t.weight": torch.zeros(3, 7)}}, wrong)
    with pytest.raises(CheckpointError, match="he_estimator"):
        load_networks(wrong, configs(facevid2vid_ref), ("he_estimator",), "cpu", torch.float32)
