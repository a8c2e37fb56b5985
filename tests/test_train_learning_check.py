"""A shortened learning check, run as a user would: sampled lips must follow held-out audio, not shuffled audio."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_pipeline_checkpoints import make_fake_checkpoints

from kdtalker.diffusion.motion import MotionNorm
from kdtalker.facevid2vid import FACEVID2VID_LAYOUT

ROOT = Path(__file__).resolve().parent.parent


def learning_check(tmp_path, **overrides) -> list[str]:
    """scripts/learning_check.py shortened (seed 3, 4 clips of 64 frames, 20 DDIM steps; `overrides` replace or add
    keys) -> its output lines."""
    keys = {
        "seed": 3,
        "data.root": tmp_path / "data",
        "train.out_dir": tmp_path / "run",
        "check.clips": 4,
        "check.frames": 64,
        "check.steps": 20,
        **overrides,
    }
    cmd = [sys.executable, str(ROOT / "scripts" / "learning_check.py"), *(f"{k}={v}" for k, v in keys.items())]
    # the timeout only guards against a hang: on a loaded machine the multi-signal check took over 15 minutes
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


@pytest.mark.slow
def test_learning_check_lips_follow_audio(tmp_path):
    # 200 steps at a higher rate (5e-3): measured r 0.489, shuffled 0.034 (400 steps at the check's 2e-3: 0.487)
    last = learning_check(tmp_path, **{"train.max_steps": 200, "train.lr": 5e-3})[-1]
    match = re.fullmatch(r"lip-audio correlation: (-?\d+\.\d+) \(shuffled audio: (-?\d+\.\d+)\)", last)
    assert match, last
    corr, shuffled = float(match.group(1)), float(match.group(2))
    assert corr > 0.4, last  # the full check (1200 steps) reaches about 0.98
    assert corr - shuffled > 0.3, last


@pytest.mark.slow
def test_multisignal_check_prints_its_four_lines_and_each_signal_drives_its_region(tmp_path):
    # a shorter run than the full check's (400 steps of batch 16 at a higher rate, 3 clips, 10 DDIM steps)
    overrides = {
        "train.max_steps": 400,
        "train.lr": 4e-3,
        "train.batch_size": 16,
        "check.clips": 3,
        "check.steps": 10,
    }
    lines = learning_check(tmp_path, check="multisignal", **overrides)[-4:]
    number = r"(-?\d+\.\d+)"
    patterns = [
        rf"multisignal both: lips~audio {number}, pose~motion {number}",
        rf"multisignal audio: lips~audio {number}",
        rf"multisignal motion: pose~motion {number}",
        rf"multisignal shuffled: lips~audio {number}, pose~motion {number}",
    ]
    values = []
    for pattern, line in zip(patterns, lines):
        match = re.fullmatch(pattern, line)
        assert match, line
        values.append([float(v) for v in match.groups()])
    (both_lips, both_pose), (audio_lips,), (motion_pose,), (shuffled_lips, shuffled_pose) = values
    text = "\n".join(lines)
    # measured at this length: lips 0.58, pose 0.79, shuffled 0.03 / -0.16; the full check (3000 steps, README)
    # reaches lips 0.96-0.98 and pose 0.75-0.80
    assert both_lips > 0.25 and audio_lips > 0.25, text
    assert both_pose > 0.45 and motion_pose > 0.45, text
    assert abs(shuffled_lips) < 0.35 and abs(shuffled_pose) < 0.35, text
    assert both_lips - shuffled_lips > 0.2 and both_pose - shuffled_pose > 0.3, text


def test_facevid2vid_check_lips_follow_audio(tmp_path):
    """check=facevid2vid: the denoiser on Face-vid2vid's 51-d synthetic motion, tiny (one 64-wide layer, 16-frame
    windows, 500 steps of 16): about 10 s of CPU."""
    tiny = {
        "train.max_steps": 500,
        "train.warmup_steps": 20,
        "train.batch_size": 16,
        "data.window": 16,
        "model.window": 16,
        "model.width": 64,
        "model.depth": 1,
        "model.heads": 4,
        "model.head_dim": 16,
        "data.samples_per_clip": 4,
        "data.synthetic.num_train": 16,
        "data.synthetic.num_val": 3,
        "data.synthetic.min_frames": 40,
        "data.synthetic.max_frames": 60,
        "check.clips": 3,
        "check.frames": 32,
        "check.steps": 5,
        "torch_threads": 1,
    }
    last = learning_check(tmp_path, check="facevid2vid", **tiny)[-1]
    match = re.fullmatch(r"lip-audio correlation: (-?\d+\.\d+) \(shuffled audio: (-?\d+\.\d+)\)", last)
    assert match, last
    corr, shuffled = float(match.group(1)), float(match.group(2))
    # measured at this size (seed 3): 0.787, shuffled 0.198
    assert corr > 0.5, last
    assert corr - shuffled > 0.35, last
    shard = np.load(tmp_path / "data" / "train" / "synth_0000.npz", allow_pickle=False)
    assert str(shard["layout"]) == "facevid2vid" and shard["exp"].shape[1:] == (15, 3) and "scale" not in shard

    # the run exports like any other: its 51-d statistics and model config go with it
    base = make_fake_checkpoints(tmp_path / "base")
    cmd = [sys.executable, str(ROOT / "scripts" / "export_checkpoint.py"), f"run={tmp_path / 'run'}", f"base={base}"]
    out = tmp_path / "exported"
    done = subprocess.run([*cmd, f"out={out}"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "motion_dim=51" in done.stdout and MotionNorm.load(out / "norm.npz", FACEVID2VID_LAYOUT).dim == 51
