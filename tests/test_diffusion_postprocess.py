"""Kalman smoothing and driving-keypoint composition (the official inference's post-processing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdtalker.diffusion import pack_motion
from kdtalker.diffusion.smoothing import kalman_smooth, smooth_motion
from kdtalker.errors import ConfigError
from kdtalker.pipeline.compose import driving_keypoints
from kdtalker.renderer.keypoints import transform_keypoints
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

OFFICIAL = (0.05, 0.001)  # the official pykalman settings (transition, observation covariance): inference.yaml's kalman


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1.3e-6, atol: float = 1e-5) -> None:
    """np.testing on tensors (torch.testing's first call imports for seconds)."""
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=rtol, atol=atol)


def test_kalman_keeps_constants_and_lines_and_damps_noise():
    const = np.full((30, 2), 3.5)
    np.testing.assert_allclose(kalman_smooth(const, *OFFICIAL), const, atol=1e-12)
    rng = np.random.default_rng(0)
    noisy = np.sin(np.linspace(0, 3, 200))[:, None] + rng.normal(scale=0.5, size=(200, 1))
    smooth = kalman_smooth(noisy, 0.05, 1.0)
    assert np.abs(np.diff(smooth[:, 0])).mean() < 0.5 * np.abs(np.diff(noisy[:, 0])).mean()
    assert kalman_smooth(np.zeros(5), *OFFICIAL).shape == (5,) and kalman_smooth(np.zeros((0, 3)), *OFFICIAL).shape == (
        0,
        3,
    )


def test_columns_are_independent_filters():
    x = np.random.default_rng(1).normal(size=(40, 4))
    joint = kalman_smooth(x, *OFFICIAL)
    for d in range(4):
        np.testing.assert_allclose(joint[:, d : d + 1], kalman_smooth(x[:, d : d + 1], *OFFICIAL), rtol=0, atol=1e-12)


def test_smooth_motion_leaves_the_scale():
    m = np.random.default_rng(2).normal(size=(20, 70)).astype(np.float32)
    out = smooth_motion(m, *OFFICIAL)
    assert out.dtype == np.float32 and np.array_equal(out[:, 0], m[:, 0]) and not np.array_equal(out[:, 1:], m[:, 1:])


def source_and_motion(frames: int = 6):
    rng = np.random.default_rng(3)
    src = {
        "pitch": rng.normal(size=(1, 1)) * 10,
        "yaw": rng.normal(size=(1, 1)) * 10,
        "roll": rng.normal(size=(1, 1)) * 10,
        "t": rng.normal(size=(1, 3)) * 0.1,
        "exp": rng.normal(size=(1, 21, 3)) * 0.01,
        "scale": np.full((1, 1), 1.5),
        "kp": rng.normal(size=(1, 21, 3)) * 0.1,
    }
    src = {k: torch.tensor(v, dtype=torch.float32) for k, v in src.items()}
    motion = pack_motion(
        scale=rng.uniform(1, 2, (frames, 1)),
        yaw=rng.normal(size=(frames, 1)) * 10,
        pitch=rng.normal(size=(frames, 1)) * 10,
        roll=rng.normal(size=(frames, 1)) * 10,
        t=rng.normal(size=(frames, 3)) * 0.1,
        exp=rng.normal(size=(frames, 63)) * 0.01,
    )
    return src, torch.tensor(motion, dtype=torch.float32)


def test_absolute_mode_is_the_liveportrait_transform_with_the_source_scale():
    src, motion = source_and_motion()
    n = motion.shape[0]
    x_d = driving_keypoints(src, motion, mode="absolute")
    expected = transform_keypoints(
        src["kp"].expand(n, -1, -1),
        motion[:, 2],
        motion[:, 1],
        motion[:, 3],
        motion[:, 7:],
        src["scale"].expand(n, 1),
        motion[:, 4:7],
    )
    assert_close(x_d, expected)


def test_relative_mode_starts_at_the_source_pose():
    src, motion = source_and_motion()
    x_d = driving_keypoints(src, motion, mode="relative")
    x_s = transform_keypoints(src["kp"], src["pitch"], src["yaw"], src["roll"], src["exp"], src["scale"], src["t"])
    assert_close(x_d[0], x_s[0], rtol=1e-5, atol=1e-5)  # frame 0 of the motion maps onto the source
    with pytest.raises(ConfigError, match="absolute"):
        driving_keypoints(src, motion, mode="sideways")


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0, 7.0, 200.0])
def test_streaming_smoother_equals_the_whole_clip_smoother(strength):
    """Pushed in uneven pieces (one row, whole windows, more than the lag): smooth_motion's output, bit for bit."""
    from kdtalker.diffusion.smoothing import StreamingSmoother

    rs = np.random.RandomState(int(strength * 10))
    motion = (0.1 * rs.standard_normal((263, 70)).cumsum(0)).astype(np.float32)
    smoother = StreamingSmoother(0.05, 0.001 * strength, enabled=strength > 0, layout=LIVEPORTRAIT_LAYOUT)
    pieces, start = [], 0
    for size in (1, 64, 3, 64, 0, 100, 31):
        pieces.append(smoother.push(motion[start : start + size]))
        start += size
    pieces.append(smoother.finish())
    assert all(p.dtype == np.float32 and p.shape[1] == 70 for p in pieces)
    want = smooth_motion(motion, 0.05, 0.001 * strength) if strength > 0 else motion
    np.testing.assert_array_equal(np.concatenate(pieces), want)
    if strength == 1.0:
        assert smoother.lag == 11  # rows are final 11 frames after they arrive (official settings)
        assert len(pieces[1]) == 65 - 11  # after 65 rows, all but the last 11 are out
