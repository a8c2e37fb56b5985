"""Motion-vector layout and the norm.npz statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import reference_root

from kdtalker.diffusion import MOTION_LAYOUT, MotionNorm, pack_motion, unpack_motion
from kdtalker.errors import CheckpointError

NORM = reference_root() / "kdtalker" / "norm.npz"


def test_layout_is_scale_yaw_pitch_roll_t_exp():
    assert [(n, a, b) for n, a, b in MOTION_LAYOUT] == [
        ("scale", 0, 1),
        ("yaw", 1, 2),
        ("pitch", 2, 3),
        ("roll", 3, 4),
        ("t", 4, 7),
        ("exp", 7, 70),
    ]
    rng = np.random.default_rng(0)
    parts = dict(
        scale=rng.normal(size=(5, 1)),
        yaw=rng.normal(size=(5, 1)),
        pitch=rng.normal(size=(5, 1)),
        roll=rng.normal(size=(5, 1)),
        t=rng.normal(size=(5, 3)),
        exp=rng.normal(size=(5, 21, 3)),
    )
    m = pack_motion(**parts)
    assert m.shape == (5, 70)
    assert np.array_equal(m[:, 1], parts["yaw"][:, 0]) and np.array_equal(m[:, 2], parts["pitch"][:, 0])
    back = unpack_motion(m)
    for k, v in parts.items():
        assert np.array_equal(back[k], v.reshape(5, -1)), k
    tm = pack_motion(**{k: torch.from_numpy(v) for k, v in parts.items()})
    assert torch.equal(tm, torch.from_numpy(m))
    with pytest.raises(ValueError, match="70 channels"):
        unpack_motion(np.zeros((3, 69)))


def test_official_norm_file_round_trips_and_inverts(tmp_path):
    norm = MotionNorm.load(NORM)
    with np.load(NORM) as official:
        assert np.array_equal(norm.mean[1:2], official["yaw_mean"])
        assert np.array_equal(norm.std[7:], official["exp_std"])
        assert np.array_equal(norm.kp_std, official["kp_std"])
        norm.save(tmp_path / "norm.npz")
        with np.load(tmp_path / "norm.npz") as ours:
            assert sorted(ours.files) == sorted(official.files)
            for k in official.files:
                assert ours[k].dtype == np.float32 and np.array_equal(ours[k], official[k]), k
    x = np.random.default_rng(1).normal(size=(4, 70)).astype(np.float32)
    np.testing.assert_allclose(norm.normalize(norm.denormalize(x)), x, rtol=1e-3, atol=1e-3)
    xt = torch.from_numpy(x)
    assert torch.equal(norm.denormalize(xt), torch.from_numpy(norm.denormalize(x)))
    kp = np.random.default_rng(2).normal(size=(3, 21, 3)).astype(np.float32)
    token = norm.canonical_token(kp)
    assert token.shape == (3, 70) and not token[:, :7].any()
    assert np.array_equal(token[:, 7:], norm.normalize_kp(kp.reshape(3, 63)))


def test_fit_replaces_zero_std():
    motion = np.random.default_rng(0).normal(size=(100, 70)).astype(np.float32)
    motion[:, 6] = 0.0  # t_z is identically zero in the data
    norm = MotionNorm.fit(motion, motion[:, 7:])
    assert norm.std[6] == 1 and norm.mean[6] == 0
    np.testing.assert_allclose(norm.normalize(motion).std(axis=0)[:6], 1, rtol=1e-4)


def test_bad_norm_files_raise(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        MotionNorm.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable"):
        MotionNorm.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", yaw_mean=np.zeros(1, np.float32))
    with pytest.raises(CheckpointError, match="scale_mean"):
        MotionNorm.load(tmp_path / "partial.npz")


def test_a_renderer_layout_round_trips_its_own_statistics(tmp_path):
    from kdtalker.facevid2vid.layout import FACEVID2VID_LAYOUT as fv

    rng = np.random.default_rng(0)
    motion, kp = rng.normal(size=(40, fv.dim)), rng.normal(size=(40, fv.num_kp, 3))
    norm = MotionNorm.fit(motion, kp, fv)
    assert norm.dim == 51 and norm.kp_mean.shape == (45,)
    norm.save(tmp_path / "norm.npz")
    with np.load(tmp_path / "norm.npz") as data:
        assert {k: data[k].size for k in data.files} == {
            "yaw_mean": 1, "yaw_std": 1, "pitch_mean": 1, "pitch_std": 1, "roll_mean": 1, "roll_std": 1,
            "t_mean": 3, "t_std": 3, "exp_mean": 45, "exp_std": 45, "kp_mean": 45, "kp_std": 45,
        }  # fmt: skip
    back = MotionNorm.load(tmp_path / "norm.npz", fv)
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)
    np.testing.assert_allclose(back.denormalize(back.normalize(motion.astype(np.float32))), motion, atol=1e-5)
    token = back.canonical_token(torch.as_tensor(kp[:2], dtype=torch.float32))
    assert token.shape == (2, 51)
    assert torch.equal(token[:, :6], torch.zeros(2, 6))
    np.testing.assert_allclose(token[:, 6:].numpy(), back.normalize_kp(kp[:2].reshape(2, 45)), atol=1e-6)
    # a 51-d file is not the official 70-d one, and the other way round: one CheckpointError naming the entry
    with pytest.raises(CheckpointError, match="scale_mean"):
        MotionNorm.load(tmp_path / "norm.npz")
    official = MotionNorm.fit(rng.normal(size=(8, 70)), rng.normal(size=(8, 63)))
    official.save(tmp_path / "official.npz")
    with pytest.raises(CheckpointError, match="facevid2vid motion layout: entry 'exp_mean' with 45"):
        MotionNorm.load(tmp_path / "official.npz", fv)
