"""FaceVid2VidRenderer built from renderer=facevid2vid (the YAML, via hydra) on fixture weights: source encoding,
the source's own motion, rendering in chunks equal to the generator's official op sequence."""

from __future__ import annotations

from dataclasses import replace
from importlib import resources

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from kdtalker.errors import CheckpointError
from kdtalker.facevid2vid import FACEVID2VID_LAYOUT, FaceVid2VidRenderer

SIZE = 128  # the smallest crop the networks take (the configured crop is 256 px; 128 keeps the test fast)


def renderer_config(weights, **overrides):
    text = resources.files("kdtalker.configs").joinpath("renderer/facevid2vid.yaml").read_text()
    cfg = OmegaConf.create(text)
    cfg.merge_with({"weights": str(weights), "device": "cpu", "dtype": "float32", **overrides})
    return cfg


@pytest.fixture(scope="module")
def renderer(facevid2vid_files) -> FaceVid2VidRenderer:
    return instantiate(renderer_config(facevid2vid_files["safetensors"]), _convert_="all")


def test_config_is_the_official_network(facevid2vid_ref, renderer):
    """The YAML's network settings are the ones the case set's official code ran with (SadTalker's mask floor)."""
    cfg = OmegaConf.to_container(renderer_config("x").configs)
    floor = facevid2vid_ref.manifest["mask_floor"]["generator"]
    assert cfg["generator"]["dense_motion_params"].pop("mask_floor") == floor
    for part in ("kp_detector", "he_estimator", "generator"):
        spec = facevid2vid_ref.spec(facevid2vid_ref.manifest["specs"][part])["config"]
        assert cfg["common"] == spec["common"] and cfg[part] == spec[part]
    assert renderer.generator.dense_motion_network.mask_floor == facevid2vid_ref.manifest["mask_floor"]["generator"]
    assert renderer.layout.dim == FACEVID2VID_LAYOUT.dim == 51


def test_encode_and_render(renderer, facevid2vid_ref):
    """The source's info and motion; a frame rendered (folded BatchNorm, fused ops) from the case set's
    image and keypoints equals the official SadTalker generator's frame."""
    ref = facevid2vid_ref
    name = "generator.in.image"
    seed, shape = int(ref[name + ".seed"]), ref.manifest["arrays"][name]["shape"]
    image = torch.from_numpy(np.random.RandomState(seed).uniform(0, 1, shape).astype(np.float32))
    source = renderer.encode_source(image)
    info = source.info
    assert info["kp"].shape == (1, 15, 3) and info["exp"].shape == (1, 15, 3) and info["yaw"].shape == (1, 1)
    motion = renderer.motion(info)
    assert motion.shape == (1, 51)
    torch.testing.assert_close(source.x_s, renderer.driving_keypoints(info["kp"], motion), rtol=0, atol=0)
    assert source.f_s.shape == (1, 32, 16, SIZE // 4, SIZE // 4)
    kp_source, kp_driving = (torch.from_numpy(ref[f"generator.in.{k}"]) for k in ("kp_source", "kp_driving"))
    frames = renderer.render(replace(source, x_s=kp_source), kp_driving)
    assert frames.shape == (1, 3, SIZE, SIZE) and frames.dtype == torch.float32
    entry = ref.manifest["arrays"]["generator.out.prediction"]
    got = frames.double().numpy().reshape(-1)[:: entry["sub_stride"]]
    want = ref["generator.out.prediction.sub"]
    # folding and fusing reorder float32 sums: measured 1.6e-4 of the frame's range (2026-12-05), below the frame's
    # own float32 noise in the official code (manifest, ~2e-4); allowed: twice that noise
    assert np.abs(got - want).max() <= 2 * entry["measured_float32_noise_over_absmax"] * np.abs(want).max()


def test_missing_weights_are_named(tmp_path):
    with pytest.raises(Exception) as caught:  # hydra wraps it; the pipeline re-raises the cause (pipeline/build.py)
        instantiate(renderer_config(tmp_path / "absent.safetensors"), _convert_="all")
    assert isinstance(caught.value.__cause__, CheckpointError) and "not found" in str(caught.value.__cause__)


def test_head_pose_from_a_second_file(facevid2vid_files, facevid2vid_states, tmp_path):
    """head_pose_weights: the estimator comes from that file (here the .pth.tar beside the safetensors)."""
    cfg = renderer_config(facevid2vid_files["safetensors"], head_pose_weights=str(facevid2vid_files["pth"]))
    loaded = instantiate(cfg, _convert_="all").he_estimator.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in facevid2vid_states["he_estimator"].items())
    other = tmp_path / "kp_only.pth.tar"
    torch.save({"kp_detector": {}}, other)
    with pytest.raises(Exception) as caught:
        instantiate(renderer_config(facevid2vid_files["safetensors"], head_pose_weights=str(other)), _convert_="all")
    assert isinstance(caught.value.__cause__, CheckpointError) and "head_pose_weights" in str(caught.value.__cause__)
