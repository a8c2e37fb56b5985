"""Hopenet loading (official key layout) and the head-motion diversity statistic on known inputs."""

import numpy as np
import pytest
import torch
from fixture_weights import fixture_state_dict
from test_eval_support import deep_fixture_weights, own_spec

from kdtalker.errors import CheckpointError
from kdtalker.eval.hopenet import (
    Hopenet,
    diversity,
    expand_box,
    logits_to_degrees,
    pose_std,
    pose_std_degrees,
    preprocess,
    video_pose_logits,
)
from kdtalker.eval.weights import load_hopenet


def _face_frame(shift: int = 0, size: int = 160) -> np.ndarray:
    """A grey frame with a bright 'face' ellipse whose features move right by `shift` pixels."""
    y, x = np.mgrid[:size, :size]
    frame = np.full((size, size, 3), 60, np.uint8)
    frame[((x - 80) / 40.0) ** 2 + ((y - 80) / 52.0) ** 2 < 1] = (200, 170, 150)
    for cx in (62 + shift, 98 + shift):
        frame[(np.abs(x - cx) < 6) & (np.abs(y - 68) < 4)] = 30
    frame[(np.abs(x - 80 - shift) < 14) & (np.abs(y - 110) < 3)] = (120, 40, 40)
    return frame


def _detector(conf=2.0):
    return lambda frame: [((40.0, 30.0, 120.0, 130.0), conf)]


def test_official_layout_loads(tmp_path):
    state = deep_fixture_weights(Hopenet(), "hopenet")
    # torchvision resnet50 without fc and BN counters (265 keys) + 3 angle heads + fc_finetune
    assert "fc_finetune.weight" in state and "layer4.2.conv3.weight" in state and len(state) == 265 + 8
    path = tmp_path / "hopenet_robust_alpha1.pkl"
    torch.save(state, path)
    model = load_hopenet(path)
    torch.testing.assert_close(model.fc_yaw.weight, state["fc_yaw.weight"])
    with torch.inference_mode():
        yaw, pitch, roll = model(preprocess(_face_frame())[None])
    assert yaw.shape == pitch.shape == roll.shape == (1, 66)
    no_finetune = {k: v for k, v in state.items() if not k.startswith("fc_finetune")}
    assert load_hopenet({f"module.{k}": v for k, v in no_finetune.items()}).fc_finetune is None


def test_loader_errors(tmp_path):
    with pytest.raises(CheckpointError, match="hopenet_robust_alpha1.pkl"):
        load_hopenet(tmp_path / "missing.pkl")
    with pytest.raises(CheckpointError, match="missing"):
        load_hopenet({"fc_yaw.weight": torch.zeros(66, 2048)})


def test_still_head_has_zero_diversity_and_moving_head_does_not():
    model = Hopenet(layers=(1, 1, 1, 1)).eval()
    model.load_state_dict(fixture_state_dict(own_spec(model), "tiny"), strict=False)
    still = video_pose_logits(model, [_face_frame()] * 3, _detector())
    moving = video_pose_logits(model, [_face_frame(s) for s in (-8, 0, 8)], _detector())
    assert still.shape == moving.shape == (3, 3, 66)
    np.testing.assert_array_equal(pose_std(still), np.zeros(3))
    assert (pose_std(moving) > 1e-3).all()
    # detections at or below confidence 1.0 are dropped, frames beyond max_frames are ignored
    assert len(video_pose_logits(model, [_face_frame()] * 2, _detector(conf=1.0))) == 0
    assert len(video_pose_logits(model, [_face_frame()] * 3, _detector(), max_frames=2)) == 2
    with pytest.raises(ValueError, match="no face"):
        pose_std(np.zeros((0, 3, 66)))


def test_diversity_statistic_on_known_logits():
    t = np.arange(5.0)[:, None, None]
    slopes = np.array([1.0, 2.0, 4.0])[None, :, None]
    logits = np.broadcast_to(t * slopes, (5, 3, 66)) + np.arange(66.0)  # bin offsets do not change the std
    np.testing.assert_allclose(pose_std(logits), np.std(np.arange(5.0)) * np.array([1.0, 2.0, 4.0]))
    out = diversity([np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 5.0])])
    assert out == pytest.approx({"yaw": 2.0, "pitch": 3.0, "roll": 4.0, "diversity": 3.0})


def test_degrees_decoding():
    peaked = np.full((2, 3, 66), -1e4)
    peaked[0, :, 33] = 0.0  # bin 33 -> 0 degrees
    peaked[1, :, 43] = 0.0  # bin 43 -> 30 degrees
    np.testing.assert_allclose(logits_to_degrees(peaked), [[0.0] * 3, [30.0] * 3])
    np.testing.assert_allclose(pose_std_degrees(peaked), [15.0] * 3)
    np.testing.assert_allclose(logits_to_degrees(np.zeros(66)), 32.5 * 3 - 99, atol=1e-9)  # uniform: mean bin 32.5


def test_box_expansion_and_preprocess():
    assert expand_box((100, 100, 140, 180), 400, 300) == (80, 40, 160, 200)
    assert expand_box((10, 10, 50, 50), 60, 55) == (0, 0, 60, 55)
    x = preprocess(np.full((90, 60, 3), 255, np.uint8))
    assert x.shape == (3, 224, 224)
    np.testing.assert_allclose(
        x[:, 0, 0].numpy(), (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-6
    )
