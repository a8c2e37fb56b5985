"""LivePortrait loaders: strict loading and one clear CheckpointError for missing, truncated or wrong files."""

from __future__ import annotations

import pytest
import torch

from kdtalker.config import CONFIG_DIR
from kdtalker.errors import CheckpointError
from kdtalker.renderer import LivePortraitRenderer
from kdtalker.renderer import checkpoints as ckpt


@pytest.fixture(scope="module")
def appearance_state(liveportrait_ref):
    return liveportrait_ref.weights(liveportrait_ref.manifest["specs"]["appearance_feature_extractor"])


@pytest.fixture(scope="module")
def stitching_nested(liveportrait_ref):
    nested: dict[str, dict] = {}
    for key, value in liveportrait_ref.weights(
        liveportrait_ref.manifest["specs"]["stitching_retargeting_module"]
    ).items():
        entry, rest = key.split(".", 1)
        nested.setdefault(entry, {})["module." + rest] = value
    return nested


def test_loads_official_layout_and_module_prefix(tmp_path, appearance_state, stitching_nested):
    path = tmp_path / "appearance_feature_extractor.pth"
    torch.save(appearance_state, path)
    net = ckpt.load_appearance_feature_extractor(path)
    assert not net.training
    assert torch.equal(net.first.conv.weight, appearance_state["first.conv.weight"])
    prefixed = ckpt.load_appearance_feature_extractor({"module." + k: v for k, v in appearance_state.items()})
    assert torch.equal(prefixed.second.weight, appearance_state["second.weight"])
    nets = ckpt.load_stitching_retargeting(stitching_nested)
    assert torch.equal(nets["lip"].mlp[0].weight, stitching_nested["retarget_mouth"]["module.mlp.0.weight"])
    assert set(nets.keys()) == {"stitching", "lip", "eye"}
    # The MLP sizes come from the renderer config when it gives them: a wrong size is a clear mismatch.
    with pytest.raises(CheckpointError, match=r"retarget_eye.*shape mismatch"):
        ckpt.load_stitching_retargeting(stitching_nested, config={"retarget_eye": {"hidden_sizes": [32, 64]}})


def test_truncated_file(tmp_path, appearance_state):
    path = tmp_path / "appearance_feature_extractor.pth"
    torch.save(appearance_state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError, match=r"appearance feature extractor.*appearance_feature_extractor\.pth.*truncated"
    ):
        ckpt.load_appearance_feature_extractor(path)


def test_wrong_file_given_as_another_module(tmp_path, appearance_state, stitching_nested):
    path = tmp_path / "appearance_feature_extractor.pth"
    torch.save(appearance_state, path)
    with pytest.raises(
        CheckpointError,
        match=r"warping module: .*appearance_feature_extractor\.pth is not the expected file.*missing keys",
    ):
        ckpt.load_warping_module(path)
    with pytest.raises(CheckpointError, match=r"SPADE generator: .*is not the expected file.*unexpected keys"):
        ckpt.load_spade_generator(path)
    nested_path = tmp_path / "stitching_retargeting_module.pth"
    torch.save(stitching_nested, nested_path)
    with pytest.raises(CheckpointError, match=r"stitching_retargeting_module\.pth"):
        ckpt.load_appearance_feature_extractor(nested_path)
    with pytest.raises(CheckpointError, match=r"stitching/retargeting.*entries \['retarget_shoulder'"):
        ckpt.load_stitching_retargeting(path)


def test_shape_mismatch_is_named(stitching_nested):
    broken = {entry: dict(sd) for entry, sd in stitching_nested.items()}
    broken["retarget_eye"]["module.mlp.0.weight"] = torch.zeros(256, 65)
    with pytest.raises(
        CheckpointError, match=r"retarget_eye.*shape mismatches.*mlp\.0\.weight \(256, 65\) != \(256, 66\)"
    ):
        ckpt.load_stitching_retargeting(broken)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"appearance_feature_extractor\.pth not found"):
        LivePortraitRenderer.from_checkpoints(tmp_path)


def test_config_builds_the_official_key_layout(liveportrait_ref):

    from omegaconf import OmegaConf

    from kdtalker.renderer import AppearanceFeatureExtractor, MotionExtractor, SPADEDecoder, WarpingNetwork

    cfg = OmegaConf.load(CONFIG_DIR / "renderer" / "liveportrait.yaml")
    configs = OmegaConf.to_container(cfg.configs)
    builders = {
        "appearance_feature_extractor": AppearanceFeatureExtractor,
        "motion_extractor": MotionExtractor,
        "warping_module": WarpingNetwork,
        "spade_generator": SPADEDecoder,
    }
    for name, build in builders.items():
        with torch.device("meta"):
            module = build(**configs[name])
        shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
        assert list(shapes.items()) == list(
            liveportrait_ref.spec(liveportrait_ref.manifest["specs"][name])["shapes"].items()
        ), name


def test_a_file_is_loaded_without_random_init_and_a_given_state_is_copied(tmp_path):
    # From a file the networks are built on the meta device and take the file's tensors (no random init, ~1 s a
    # load at full size): every parameter and buffer must be real and the file's, spectral-norm u and v included.
    from kdtalker.renderer.spade import SPADEDecoder

    config = {"block_expansion": 8, "max_features": 16}
    state = SPADEDecoder(**config).state_dict()
    torch.save(state, tmp_path / "spade_generator.pth")
    net = ckpt.load_spade_generator(tmp_path / "spade_generator.pth", config=config)
    loaded = net.state_dict()
    assert sorted(loaded) == sorted(state) and not any(t.is_meta for t in [*net.parameters(), *net.buffers()])
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert any(k.endswith("weight_u") for k in state)
    # a state dict the caller holds is copied: the module must not share (and later change) the caller's tensors
    given = ckpt.load_spade_generator(state, config=config)
    ours = {t.data_ptr() for t in [*given.parameters(), *given.buffers()]}
    assert not ours & {t.data_ptr() for t in state.values()}
