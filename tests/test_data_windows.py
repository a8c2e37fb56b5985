"""Synthetic shards, norm stats (official norm.npz layout) and the official training-window recipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kdtalker.data import read_shard, write_shard
from kdtalker.data.dataset import MotionWindows
from kdtalker.data.norm_stats import compute_norm_stats, write_norm
from kdtalker.data.shards import Clip
from kdtalker.data.synthetic import generate_synthetic, synthetic_clip
from kdtalker.diffusion.motion import EYE_KEYPOINTS, LIP_KEYPOINTS, MotionNorm, expression_channels
from kdtalker.errors import KDTalkerError
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

ROOT = Path(__file__).resolve().parent.parent

# LivePortrait's layout with its lip and eye keypoints, as data=synthetic generates them
LP_SYNTH = dict(layout=LIVEPORTRAIT_LAYOUT, lips=LIP_KEYPOINTS, eyes=EYE_KEYPOINTS)


def test_synthetic_is_deterministic_and_lips_follow_audio(tmp_path):
    a = generate_synthetic(tmp_path / "a", 3, seed=7, min_frames=70, max_frames=90, **LP_SYNTH)
    b = generate_synthetic(tmp_path / "b", 3, seed=7, min_frames=70, max_frames=90, **LP_SYNTH)
    c = generate_synthetic(tmp_path / "c", 3, seed=8, min_frames=70, max_frames=90, **LP_SYNTH)
    assert a[2].read_bytes() == b[2].read_bytes()
    assert read_shard(a[0]).aud_feat.tobytes() != read_shard(c[0]).aud_feat.tobytes()
    clip = read_shard(a[1])
    assert clip.motion["exp"].shape[1:] == (21, 3) and clip.aud_feat.shape[1] == 512

    # the lip exp channels are a linear function of the audio (one ridge map fits every clip); head pose is not
    def lip(c):
        return c.motion["exp"][:, LIP_KEYPOINTS[2], 1]

    train = [read_shard(p) for p in a]
    x = np.concatenate([c.aud_feat for c in train])
    w = np.linalg.solve(x.T @ x + 100.0 * np.eye(512), x.T @ np.concatenate([lip(c) for c in train]))
    held_out = synthetic_clip(5, 7, 120, **LP_SYNTH)
    assert np.corrcoef(lip(held_out), held_out.aud_feat @ w)[0, 1] > 0.8
    yaw = clip.motion["yaw"][:, 0]
    assert abs(np.corrcoef(yaw, clip.aud_feat @ w)[0, 1]) < 0.5
    assert expression_channels((0, 1)) == [7, 8, 9, 10, 11, 12]
    # the eyes blink independently of the audio (and of the lips): short closures, not a drift
    eye = held_out.motion["exp"][:, EYE_KEYPOINTS[0], :]
    eye_signal = eye[:, np.abs(eye - eye[0]).max(0).argmax()]
    assert abs(np.corrcoef(eye_signal, held_out.aud_feat @ w)[0, 1]) < 0.3
    assert abs(np.corrcoef(eye_signal, lip(held_out))[0, 1]) < 0.3


def test_norm_stats_official_layout(tmp_path, kdtalker_ref):
    paths = generate_synthetic(tmp_path / "s", 4, seed=1, min_frames=70, max_frames=80, **LP_SYNTH)
    out = write_norm(paths, tmp_path / "norm.npz")
    ours = np.load(out)
    official = np.load(kdtalker_ref.path / "norm.npz")
    assert sorted(ours.files) == sorted(official.files)
    for key in official.files:
        assert ours[key].shape == official[key].shape and ours[key].dtype == np.float32, key
    clips = [read_shard(p) for p in paths]
    exp = np.concatenate([c.motion["exp"].reshape(-1, 63) for c in clips])
    np.testing.assert_allclose(ours["exp_mean"], exp.astype(np.float64).mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours["exp_std"], exp.astype(np.float64).std(0), rtol=1e-5, atol=1e-9)
    assert ours["t_std"][2] == 1.0 and ours["t_mean"][2] == 0.0  # tz never moves -> std replaced by 1
    norm = MotionNorm.load(out)
    assert norm.mean.shape == (70,) and norm.kp_std.shape == (63,)
    np.testing.assert_allclose(compute_norm_stats(paths)["yaw_std"], ours["yaw_std"])


def test_compute_norm_script(tmp_path):
    generate_synthetic(tmp_path / "s", 2, seed=1, min_frames=70, max_frames=80, **LP_SYNTH)
    script = [sys.executable, str(ROOT / "scripts" / "compute_norm.py")]
    ok = subprocess.run(
        script + [f"shards={tmp_path / 's'}", f"out={tmp_path / 'n.npz'}"], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert MotionNorm.load(tmp_path / "n.npz").std.shape == (70,)
    bad = subprocess.run(
        script + [f"shards={tmp_path / 'none'}", f"out={tmp_path / 'm.npz'}"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "m.npz").exists()


def _clip(frames: int, audio_frames: int) -> Clip:
    rng = np.random.default_rng(frames)
    shapes = {"scale": (1,), "pitch": (1,), "yaw": (1,), "roll": (1,), "t": (3,), "exp": (21, 3), "kp": (21, 3)}
    motion = {k: rng.normal(size=(frames, *s)).astype(np.float32) for k, s in shapes.items()}
    return Clip(motion, rng.normal(size=(audio_frames, 512)).astype(np.float32))


def test_windows_follow_the_official_recipe(tmp_path):
    write_shard(tmp_path / "a.npz", _clip(80, 75))  # aligned N = min(79, 73) = 73
    write_shard(tmp_path / "short.npz", _clip(40, 42))
    (tmp_path / "stats").mkdir()
    norm_path = write_norm([tmp_path / "a.npz"], tmp_path / "stats" / "norm.npz")  # not among the shards
    norm = MotionNorm.load(norm_path)
    lines: list[str] = []
    ds = MotionWindows(
        [tmp_path / "a.npz", tmp_path / "short.npz"], norm, window=64, samples_per_clip=50, seed=3, log=lines.append
    )
    assert len(ds.clips) == 1 and len(lines) == 1 and "short.npz" in lines[0]
    clip = read_shard(tmp_path / "a.npz")
    m = clip.motion
    raw = np.concatenate([m["scale"], m["yaw"], m["pitch"], m["roll"], m["t"], m["exp"].reshape(-1, 63)], 1)
    motion = (raw - norm.mean) / norm.std
    kp = (m["kp"].reshape(-1, 63) - norm.kp_mean) / norm.kp_std
    seen = set()
    for i in range(len(ds)):
        r = ds.ref_index(i)
        assert 0 <= r <= 73 - 1 - 64
        seen.add(r)
        item = ds[i]
        np.testing.assert_allclose(item["ref"].numpy(), motion[r], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(item["x0"].numpy(), motion[r + 1 : r + 65], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(item["audio"].numpy(), clip.aud_feat[r + 1 : r + 65])
        np.testing.assert_allclose(item["ori"].numpy(), np.concatenate([np.zeros(7), kp[r]]), rtol=1e-6, atol=1e-6)
    assert seen == set(range(9))  # every admissible ref index 0..N-1-64 is drawn
    first = [ds.ref_index(i) for i in range(10)]
    ds.set_epoch(1)
    assert [ds.ref_index(i) for i in range(10)] != first
    ds.set_epoch(0)
    assert [ds.ref_index(i) for i in range(10)] == first
    with pytest.raises(KDTalkerError, match="no usable clips"):
        MotionWindows([tmp_path / "short.npz"], norm, window=64, log=lambda s: None)
    assert isinstance(ds[0]["x0"], torch.Tensor) and ds[0]["x0"].dtype == torch.float32
