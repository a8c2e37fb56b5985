"""Evaluation under torchrun (two CPU processes over gloo): the split of the videos over the ranks, the same tables
as one process, resuming from the per-video caches, more ranks than videos, and a failing rank that stops the job.

Generation uses the e2e tests' stand-in pipeline (tests/eval_standin_run.py): its reported timings are fixed, so the
FPS (gen) column is exact and the markdown and CSV compare byte for byte. FPS (wall) is a stopwatch around each
generation (different in every run, also on one process): it is only in summary.json and is left out there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_eval_e2e import _overrides
from test_eval_e2e import setup as setup  # noqa: F401 - the e2e tests' clips and fixture weights (a fixture)

from kdtalker.config import CONFIG_DIR
from kdtalker.distributed import DistInfo, run_on_every_rank, shard
from kdtalker.errors import ConfigError, VideoError
from kdtalker.eval.protocol import Evaluation, run_evaluation

REPO = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


@pytest.mark.parametrize("items, world", [(10, 3), (5, 2), (2, 4), (0, 2), (7, 1)])
def test_every_item_goes_to_exactly_one_rank_and_always_the_same(items, world):
    names = [f"clip{k:03d}" for k in range(items)]
    shares = [shard(names, DistInfo(rank, world, joined=world > 1)) for rank in range(world)]
    assert sorted(n for share in shares for n in share) == names
    for rank, share in enumerate(shares):
        assert share == [names[i] for i in range(items) if i % world == rank]  # item i -> rank i % world
    if items < world:  # more ranks than items: the extra ranks get nothing to do
        assert [len(s) for s in shares] == [1] * items + [0] * (world - items)
    assert shard(names, DistInfo()) == names  # without torchrun: everything


def test_without_torchrun_a_share_runs_in_place():
    info = DistInfo()
    assert run_on_every_rank(info, lambda: {"a": [1.5, None]}) == [{"a": [1.5, None]}]
    assert info.gather_json({"t": (1, 2)}) == [{"t": [1, 2]}]  # the JSON round trip several ranks make
    with pytest.raises(VideoError, match="bad clip"):
        run_on_every_rank(info, lambda: (_ for _ in ()).throw(VideoError("bad clip")))


def test_each_rank_generates_and_scores_on_its_own_gpu(tmp_path):
    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.output_dir = str(tmp_path)
    rank1 = Evaluation(cfg, device="cuda:1")  # as run_evaluation builds it on LOCAL_RANK 1 (nothing runs here)
    assert rank1.scorer.device == "cuda:1"
    assert rank1._pipeline_overrides({"overrides": ["+experiment=steps_5"]}) == ["+experiment=steps_5", "device=cuda:1"]
    assert rank1._pipeline_overrides({"overrides": ["device=cpu"]}) == ["device=cpu"]  # a row's own choice stays
    single = Evaluation(cfg)  # without torchrun: the config's device and the row's overrides, as before
    assert single.scorer.device == "auto" and single._pipeline_overrides({"overrides": []}) == []


@pytest.mark.parametrize("value", [0, -1, "soon"])
def test_a_bad_timeout_is_one_clear_error(tmp_path, value):
    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with_dotlist([f"output_dir={tmp_path}", f"distributed.timeout_minutes={value}"])
    with pytest.raises(ConfigError, match="distributed.timeout_minutes=.* must be a positive number of minutes"):
        run_evaluation(cfg)


def _env(**extra: str) -> dict[str, str]:
    # one thread per process in both runs: the float reductions (Inception, SyncNet) then sum in the same order
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return {**env, **extra}


def _evaluate(launcher: list[str], setup: Path, out: Path, peer: Path, *extra: str) -> subprocess.CompletedProcess:
    table = (
        "tables=[{name: t1, title: T1, rows: [{label: KDTalker, name: full, overrides: []}, "
        f"{{label: Peer, folder: '{peer}', fps: 30.0}}]}}]"
    )
    cmd = [*launcher, *_overrides(setup, out), "seconds=0.32", "metrics=[lse,cpbd,fps,fid]", table, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, cwd=out.parent)


def _tables(out: Path) -> dict[str, str]:
    found = {p.name: p.read_text() for p in (out / "tables").iterdir()}
    summary = json.loads(found.pop("summary.json"))
    for row in summary["t1"].values():
        row.pop("fps_wall", None)  # a stopwatch: differs between any two runs
    return {**found, "summary.json": json.dumps(summary, indent=1, sort_keys=True)}


@pytest.mark.slow
def test_two_ranks_write_the_tables_one_process_writes_and_resume(setup, tmp_path):  # noqa: F811
    runs = {}
    for name, launcher in (
        ("one", [sys.executable, str(REPO / "tests" / "eval_standin_run.py")]),
        ("two", [*TORCHRUN, "--nproc_per_node=2", str(REPO / "tests" / "eval_standin_run.py")]),
    ):
        (tmp_path / name).mkdir()
        peer = shutil.copytree(setup / "peer", tmp_path / name / "peer")  # each run computes the peer's metrics
        done = _evaluate(launcher, setup, tmp_path / name / "out", peer)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
        runs[name] = done
    one, two = tmp_path / "one" / "out", tmp_path / "two" / "out"
    assert sorted(_tables(one)) == ["summary.json", "t1.csv", "t1.md"]
    assert _tables(two) == _tables(one)
    assert runs["two"].stdout == runs["one"].stdout  # the tables printed once (by rank 0), as one process prints them
    assert runs["one"].stdout.count("**T1**") == 1
    values = json.loads((one / "tables" / "summary.json").read_text())["t1"]["KDTalker"]
    assert values["videos"] == 2 and values["fps"] == 16.0 and np.isfinite(values["fid"])
    # each rank generated and scored its share (clip k on rank k % 2) and wrote those videos' caches
    for k in (0, 1):
        assert (two / "generated" / "full" / f"clip{k}.rank").read_text() == str(k)
        assert (two / "generated" / "full" / f"clip{k}.metrics.json").is_file()
        assert (two / "inputs" / f"clip{k}.png").is_file() and (tmp_path / "two" / "peer" / f"clip{k}.metrics.json")
    # resume with three ranks (more ranks than videos): everything comes from the caches, nothing is generated
    made = {p: p.stat().st_mtime_ns for p in (two / "generated" / "full").iterdir()}
    again = _evaluate(
        [*TORCHRUN, "--nproc_per_node=3", str(REPO / "tests" / "eval_standin_run.py")],
        setup,
        two,
        tmp_path / "two" / "peer",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (two / "generated" / "full").iterdir()} == made
    assert _tables(two) == _tables(one) and again.stdout == runs["one"].stdout


def test_a_failing_rank_stops_the_job_with_one_error_line(setup, tmp_path):  # noqa: F811
    # clip1 is rank 1's video: rank 1 fails while rank 0 scores clip0; rank 0 must not wait for it forever
    peer = shutil.copytree(setup / "peer", tmp_path / "peer")
    (peer / "clip1.mp4").write_bytes(b"not a video")
    table = f"tables=[{{name: p, title: P, rows: [{{label: Peer, folder: '{peer}'}}]}}]"
    cmd = [*TORCHRUN, "--nproc_per_node=2", str(REPO / "scripts" / "evaluate.py"), *_overrides(setup, tmp_path / "o")]
    done = subprocess.run(
        [*cmd, "generate=false", "metrics=[cpbd]", table], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "clip1.mp4" in errors[0], done.stderr[-3000:]
    assert not list((tmp_path / "o").glob("tables/*"))  # no table from a part of the videos


@pytest.mark.slow
def test_a_stuck_rank_stops_the_others_after_the_timeout(setup, tmp_path):  # noqa: F811
    # rank 1 hangs in its generation; rank 0 waits distributed.timeout_minutes (12 s here) and then stops the job
    cmd = [*TORCHRUN, "--nproc_per_node=2", str(REPO / "tests" / "eval_standin_run.py"), *_overrides(setup, tmp_path)]
    cmd += ["seconds=0.32", "metrics=[cpbd]", "distributed.timeout_minutes=0.2"]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(STANDIN_STALL_RANK="1"), timeout=120)
    assert done.returncode != 0 and time.monotonic() - started < 100
    assert "error: rank 0 lost contact with the other ranks" in done.stderr, done.stderr[-3000:]
    assert "distributed.timeout_minutes" in done.stderr
