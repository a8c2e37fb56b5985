"""train.py under torchrun with two CPU processes (DDP over gloo): runs, and a run cut after step 2 resumes exactly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from test_train_resume import TINY

from kdtalker.training.checkpoint import latest_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def test_two_processes_train_and_resume_exactly(tmp_path):
    # Without the untrained block2.norm kept out of DDP's buckets, the second step fails ("Expected to have
    # finished reduction in the prior iteration"), as find_unused_parameters is off.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "train.py")]
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")

    def train(run: str, steps: int) -> None:
        overrides = [*TINY, f"data.root={tmp_path / 'data'}", "train.ckpt_every=2", "train.val_every=0"]
        overrides += [f"train.max_steps={steps}", f"train.out_dir={tmp_path / run}"]
        done = subprocess.run([*cmd, *overrides], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Traceback" not in done.stderr

    train("full", 4)
    (tmp_path / "cut").mkdir()
    shutil.copy(tmp_path / "full" / "checkpoint-000002.pth", tmp_path / "cut")
    train("cut", 4)  # resumes from step 2, each rank from its own saved random state
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "cut"))
    assert a["step"] == b["step"] == 4 and len(a["rng"]) == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    start = load_checkpoint(tmp_path / "full" / "checkpoint-000002.pth")
    trained = [k for k in a["model"] if not torch.equal(a["model"][k], start["model"][k])]
    untrained = [k for k in a["model"] if ".block2.norm." in k]
    assert untrained and not set(untrained) & set(trained)
    assert len(trained) > len(a["model"]) // 2
