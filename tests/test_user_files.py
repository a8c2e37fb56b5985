"""Nothing the user owns is written: synthetic data goes to its own folder; named inputs stay as they were."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from kdtalker.data.prepare import prepare_data
from kdtalker.errors import OutputError

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    "data=synthetic",
    "data.synthetic.num_train=2",
    "data.synthetic.num_val=1",
    "data.synthetic.min_frames=30",
    "data.synthetic.max_frames=40",
]


def data_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        return compose("train", overrides=[*SMALL, f"data.root={tmp_path / 'data'}", *overrides]).data


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.mark.parametrize("named", ["notes.txt", "official_norm.npz"])
def test_named_norm_is_read_never_written(tmp_path, named):
    given = tmp_path / named
    if named.endswith(".npz"):
        given.write_bytes((ROOT / "checkpoints" / "norm.npz").read_bytes())
    else:
        given.write_text("my notes\n")
    before = snapshot(given)
    files = prepare_data(data_cfg(tmp_path, f"data.norm={given}"))
    assert files.norm == given and snapshot(given) == before
    assert len(files.train) == 2 and not (tmp_path / "data" / "norm.npz").exists()


def test_generated_norm_lives_in_the_generated_folder(tmp_path):
    files = prepare_data(data_cfg(tmp_path))
    assert files.norm == tmp_path / "data" / "norm.npz" and files.norm.is_file()
    again = prepare_data(data_cfg(tmp_path))  # the run's own statistics are reused (or refreshed), not refused
    assert again.norm == files.norm


def test_foreign_norm_in_root_stops_the_run(tmp_path):
    (tmp_path / "data").mkdir()
    theirs = tmp_path / "data" / "norm.npz"
    theirs.write_text("not mine to replace")
    before = snapshot(theirs)
    with pytest.raises(OutputError, match="not made by the synthetic data generator"):
        prepare_data(data_cfg(tmp_path))
    assert snapshot(theirs) == before and sorted(p.name for p in (tmp_path / "data").iterdir()) == ["norm.npz"]


def test_generator_refuses_a_folder_it_did_not_make(tmp_path):
    shards = tmp_path / "mine"
    shards.mkdir()
    (shards / "clip.npz").write_bytes(b"the user's real shard")
    with pytest.raises(OutputError, match="did not make \\(clip.npz\\)"):
        prepare_data(data_cfg(tmp_path, f"data.train_dir={shards}"))
    assert [p.name for p in shards.iterdir()] == ["clip.npz"]


def test_train_script_keeps_a_named_norm_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *SMALL,
            "device=cpu",
            f"data.root={tmp_path / 'data'}",
            f"data.norm={notes}",
            f"train.out_dir={tmp_path / 'run'}",
            "train.max_steps=1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert notes.read_text() == "my notes\n"
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "notes.txt" in run.stderr
