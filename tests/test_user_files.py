"""Nothing the user owns is written: synthetic data goes to its own folder; named inputs stay as they were; every
writer clears the temporary parts killed runs left in the folder it writes to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from test_pipeline_download import _script
from test_pipeline_generate import EXAMPLE, pipeline, speech  # noqa: F401 - pipeline is a fixture

from kdtalker.config import CONFIG_DIR
from kdtalker.data.norm_stats import write_norm
from kdtalker.data.prepare import prepare_data
from kdtalker.data.synthetic import generate_synthetic
from kdtalker.diffusion.motion import EYE_KEYPOINTS, LIP_KEYPOINTS
from kdtalker.errors import OutputError
from kdtalker.eval.protocol import Evaluation
from kdtalker.pipeline.weights import NORM_FILE
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

ROOT = Path(__file__).resolve().parent.parent
download_weights = _script()
SMALL = [
    "data=synthetic",
    "data.synthetic.num_train=2",
    "data.synthetic.num_val=1",
    "data.synthetic.min_frames=30",
    "data.synthetic.max_frames=40",
]

# LivePortrait's layout with its lip and eye keypoints, as data=synthetic generates them
LP_SYNTH = dict(layout=LIVEPORTRAIT_LAYOUT, lips=LIP_KEYPOINTS, eyes=EYE_KEYPOINTS)


def data_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
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


def test_inference_output_is_never_one_of_its_inputs(pipeline, tmp_path):  # noqa: F811 - the fixture
    motion = tmp_path / "m.npz"
    np.savez(motion, motion=np.zeros((25, 70), np.float32))
    before = snapshot(motion)
    with pytest.raises(OutputError, match="save_motion=.*is also the input motion_file"):
        pipeline.generate(EXAMPLE, None, tmp_path / "o.mp4", motion_file=motion, save_motion=motion)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"the user's driving video")
    with pytest.raises(OutputError, match="output=.*is also the input driving_video"):
        pipeline.generate(EXAMPLE, speech(tmp_path / "a.wav", 0.5), clip, driving_video=clip, control={"pose": "video"})
    assert snapshot(motion) == before and clip.read_bytes() == b"the user's driving video"
    assert not (tmp_path / "o.mp4").exists()


def test_compute_norm_never_writes_among_the_shards(tmp_path):
    shards = tmp_path / "shards"
    made = generate_synthetic(shards, 2, min_frames=30, max_frames=40, **LP_SYNTH)
    before = snapshot(made[0])
    for out in (made[0], shards / "norm.npz"):
        with pytest.raises(OutputError, match="in the shard folder"):
            write_norm(made, out)
    assert snapshot(made[0]) == before and not (shards / "norm.npz").exists()
    assert write_norm(made, tmp_path / "norm.npz").is_file()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def stale_part(folder: Path, name: str) -> Path:
    """What a SIGKILLed atomic write of folder/name leaves: its hidden sibling, named with the dead pid."""
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{name}.{dead_pid()}.0badc0de.part"
    part.write_bytes(b"half")
    return part


def write_eval_tables(folder: Path) -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.output_dir = str(folder)
    evaluation = Evaluation(cfg)
    evaluation.score_row = lambda row: {}
    evaluation.tables()


def write_shipped_norm(folder: Path) -> None:
    for (
        relpath
    ) in download_weights.sources():  # every weight present but the statistics, which are copied from the repository
        if relpath != NORM_FILE:
            (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
            (folder / relpath).write_bytes(b"present")
    download_weights.main(OmegaConf.create({"dir": str(folder), "crop_models": False, "timeout": 1.0}))
    assert (folder / NORM_FILE).read_bytes() == (ROOT / "checkpoints" / NORM_FILE).read_bytes()


@pytest.mark.parametrize(
    "writer, subfolder, name",
    [
        (write_eval_tables, "tables", "summary.json"),
        (write_shipped_norm, "", NORM_FILE),
        (lambda folder: generate_synthetic(folder, 1, min_frames=30, max_frames=40, **LP_SYNTH), "", "synth_0000.npz"),
    ],
)
def test_every_writer_clears_the_parts_killed_runs_left(tmp_path, writer, subfolder, name):
    part = stale_part(tmp_path / "out" / subfolder, name)
    live = tmp_path / "out" / subfolder / f".{name}.{os.getpid()}.0000beef.part"  # a running write: kept
    live.write_bytes(b"in progress")
    writer(tmp_path / "out")
    assert not part.exists() and live.exists()
