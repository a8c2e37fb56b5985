"""A shortened learning check, run as a user would: sampled lips must follow held-out audio, not shuffled audio."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_learning_check_lips_follow_audio(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "learning_check.py"),
        "seed=3",
        f"data.root={tmp_path / 'data'}",
        f"train.out_dir={tmp_path / 'run'}",
        "train.max_steps=400",
        "check.clips=4",
        "check.frames=64",
        "check.steps=20",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"lip-audio correlation: (-?\d+\.\d+) \(shuffled audio: (-?\d+\.\d+)\)", last)
    assert match, last
    corr, shuffled = float(match.group(1)), float(match.group(2))
    assert corr > 0.4, last  # the full check (1200 steps) reaches about 0.98
    assert corr - shuffled > 0.3, last


def test_multisignal_check_prints_its_four_lines_and_each_signal_drives_its_region(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "learning_check.py"),
        "check=multisignal",
        "seed=3",
        f"data.root={tmp_path / 'data'}",
        f"train.out_dir={tmp_path / 'run'}",
        "train.max_steps=MS_STEPS",
        "check.clips=4",
        "check.frames=64",
        "check.steps=20",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()[-4:]
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
    assert both_lips > 0.4 and audio_lips > 0.4, text  # the full check (3000 steps) reaches MS_FULL_LIPS
    assert both_pose > MS_POSE and motion_pose > MS_POSE, text  # ... and MS_FULL_POSE
    assert abs(shuffled_lips) < 0.3 and abs(shuffled_pose) < 0.3, text
