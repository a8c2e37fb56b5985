"""train.py's input mistakes: each one line naming the file, said before any data is prepared."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def train_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [sys.executable, str(ROOT / "train.py"), "device=cpu", f"train.out_dir={tmp_path / 'run'}", *overrides]
    return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)


def one_line_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


@pytest.mark.parametrize("kind", ["file", "fake_npz"])
def test_shard_folder_mistakes_name_the_file(tmp_path, kind):
    shards = tmp_path / "shards"
    if kind == "file":
        shards.write_text("not a folder")
    else:
        shards.mkdir()
        (shards / "notes.npz").write_text("a text file with the wrong name")
    norm = ROOT / "checkpoints" / "norm.npz"
    line = one_line_error(
        train_cli(tmp_path, f"data.train_dir={shards}", f"data.val_dir={shards}", f"data.norm={norm}")
    )
    if kind == "file":
        assert "is a file, not a folder" in line and "does not exist" not in line
    else:
        assert "notes.npz is not a shard" in line and "allow_pickle" not in line


def test_resume_file_is_checked_before_the_data(tmp_path):
    line = one_line_error(
        train_cli(tmp_path, "data=synthetic", f"data.root={tmp_path / 'data'}", f"train.resume={tmp_path / 'no.pth'}")
    )
    assert "train.resume=" in line and "no.pth" in line
    assert not (tmp_path / "data").exists()  # no shard was generated before the resume file was checked
