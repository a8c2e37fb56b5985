"""Packed, memory-mapped training data: the same windows as the shard folder; data.select; persistent workers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from kdtalker.data import write_shard
from kdtalker.data.dataset import MotionWindows
from kdtalker.data.norm_stats import write_norm
from kdtalker.data.packed import PackedClips, is_packed, pack_shards
from kdtalker.data.prepare import prepare_data
from kdtalker.data.select import select_clips
from kdtalker.data.shards import MOTION_KEYS, Clip, shard_paths
from kdtalker.diffusion.motion import MotionNorm
from kdtalker.errors import KDTalkerError, OutputError
from kdtalker.training.distributed import DistInfo, ResumableSampler

ROOT = Path(__file__).resolve().parent.parent
# name -> (video frames, audio frames, sync offset, sync confidence); two speakers repeat 00001
CLIPS = {
    "id1/v1/00001": (80, 81, 0, 6.0),
    "id1/v1/00002": (70, 75, 3, 8.0),  # off by 3 frames
    "id2/v9/00001": (90, 88, -1, 2.0),  # not confident enough
    "id2/v9/00002": (40, 42, 0, 9.0),  # too short for a 64-frame window
    "id3/w/00001": (75, 76, 1, 3.5),
}


def _clip(seed: int, frames: int, audio_frames: int) -> Clip:
    rng = np.random.default_rng(seed)
    motion = {k: rng.normal(size=(frames, *s)).astype(np.float32) for k, s in MOTION_KEYS.items()}
    return Clip(motion, rng.normal(size=(audio_frames, 512)).astype(np.float32))


@pytest.fixture
def shards(tmp_path) -> Path:
    """A shard folder in the extraction layout: sub-folders per speaker/video and an index with SyncNet scores."""
    root = tmp_path / "shards"
    lines = []
    for i, (name, (frames, audio, offset, conf)) in enumerate(CLIPS.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        path = write_shard(root / f"{name}.npz", _clip(i, frames, audio))
        record = {"clip": name, "bytes": path.stat().st_size, "sync_offset": offset, "sync_conf": conf}
        lines.append(json.dumps(record) + "\n")
    (root / "index-00000-of-00001.jsonl").write_text("".join(lines))
    (tmp_path / "stats").mkdir()
    write_norm(shard_paths(root), tmp_path / "stats" / "norm.npz")
    return root


def test_packed_windows_equal_the_shard_folder_bit_for_bit(shards, tmp_path):
    norm = MotionNorm.load(tmp_path / "stats" / "norm.npz")
    packed = PackedClips(pack_shards(shards, tmp_path / "packed", log=lambda s: None))
    assert len(packed) == 5 and list(packed.column("speaker")) == ["id1", "id1", "id2", "id2", "id3"]
    assert list(packed.column("video")) == ["v1", "v1", "v9", "v9", "w"]
    np.testing.assert_array_equal(packed.column("sync_offset"), [0, 3, -1, 0, 1])
    lines_a, lines_b = [], []
    in_memory = MotionWindows(shard_paths(shards), norm, 64, samples_per_clip=3, seed=2, log=lines_a.append)
    mapped = MotionWindows(packed, norm, 64, samples_per_clip=3, seed=2, log=lines_b.append)
    assert len(in_memory) == len(mapped) == 12 and len(lines_a) == len(lines_b) == 1  # the short clip is left out
    for epoch in (0, 1):
        in_memory.set_epoch(epoch)
        for i in range(len(mapped)):
            a, b = in_memory[i], mapped[(epoch, i)]  # the epoch as a persistent worker gets it
            assert a.keys() == b.keys()
            for key in a:
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (epoch, i, key)
    for a, b in zip(in_memory.clips, mapped.clips[:4]):
        assert np.array_equal(a.motion, b.motion) and np.array_equal(a.kp, b.kp) and np.array_equal(a.audio, b.audio)
    eval_a = MotionWindows(shard_paths(shards), norm, 64, seed=2, train=False, log=lambda s: None)
    eval_b = MotionWindows(packed, norm, 64, seed=2, train=False, log=lambda s: None)
    assert all(torch.equal(eval_a[i]["x0"], eval_b[i]["x0"]) for i in range(len(eval_a)))


def test_pack_refuses_bad_places_and_damage_is_one_error(shards, tmp_path):
    with pytest.raises(OutputError, match="inside the shard folder"):
        pack_shards(shards, shards / "packed")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "a.npz").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(KDTalkerError, match="a.npz is unreadable"):
        pack_shards(tmp_path / "damaged", tmp_path / "p1")
    assert not (tmp_path / "p1").exists()  # nothing half-written
    (tmp_path / "empty").mkdir()
    with pytest.raises(KDTalkerError, match="no shards"):
        pack_shards(tmp_path / "empty", tmp_path / "p2")
    out = pack_shards(shards, tmp_path / "packed", log=lambda s: None)
    assert sorted(p.name for p in out.iterdir()) == ["audio.f32", "clips.npz", "kp.f32", "motion.f32", "pack.json"]
    with open(out / "audio.f32", "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(KDTalkerError, match="cut short"):
        PackedClips(out)
    (out / "pack.json").unlink()  # a run killed while moving its files into place
    with pytest.raises(KDTalkerError, match="unfinished pack"):
        is_packed(out)
    (out / ".packing.999999999").mkdir()  # a killed run's temporary folder
    pack_shards(shards, out, log=lambda s: None)
    assert is_packed(out) and not list(out.glob(".packing.*"))
    assert len(PackedClips(out)) == 5


def test_persistent_workers_see_each_epoch(shards, tmp_path):
    norm = MotionNorm.load(tmp_path / "stats" / "norm.npz")
    dataset = MotionWindows(PackedClips(pack_shards(shards, tmp_path / "p")), norm, 64, 4, seed=1, log=print)
    sampler = ResumableSampler(dataset, DistInfo(), seed=1, with_epoch=True)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2, persistent_workers=True)
    for epoch in (0, 1, 2):
        sampler.set_epoch(epoch)
        sampler.skip = 4 if epoch == 2 else 0  # a resume mid-epoch
        dataset.set_epoch(99)  # never reaches the workers' copies: the epoch travels with the index
        got = torch.cat([batch["x0"] for batch in loader])
        dataset.set_epoch(epoch)
        want = torch.stack([dataset[i]["x0"] for i in list(ResumableSampler.__iter__(_plain(sampler)))])
        assert torch.equal(got, want), epoch


def _plain(sampler: ResumableSampler) -> ResumableSampler:
    """The same sampler position yielding bare indices."""
    twin = ResumableSampler(sampler.dataset, DistInfo(), seed=sampler.seed)
    twin.set_epoch(sampler.epoch)
    twin.skip = sampler.skip
    return twin


def test_select_keeps_clips_by_stored_offset_and_confidence(shards, tmp_path):
    keep, line = select_clips(np.array([0, 3, -1, 0, 1.0]), np.array([6, 8, 2, 9, 3.5]), 1, 3.0)
    assert keep.tolist() == [True, False, False, True, True]
    assert line == "data.select: 3 of 5 scored clips pass (|offset| <= 1 frames, confidence >= 3)"
    keep, line = select_clips(np.full(4, np.nan), np.full(4, np.nan), 1, 3.0)
    assert keep.all() and line.startswith("note: no SyncNet scores for the 4 training clips") and "all are kept" in line
    keep, line = select_clips(np.array([0, np.nan]), np.array([1.0, np.nan]), 1, 3.0)
    assert keep.tolist() == [False, True] and "1 clips without scores are kept" in line

    pack_shards(shards, tmp_path / "packed", log=lambda s: None)
    rule = {"max_offset": 1, "min_confidence": 3.0}
    for train_dir in (shards, tmp_path / "packed"):  # the index of a shard folder, the scores stored in a pack
        cfg = OmegaConf.create(
            {"train_dir": str(train_dir), "val_dir": str(shards), "norm": str(tmp_path / "stats" / "norm.npz")}
        )
        files = prepare_data(OmegaConf.merge(cfg, {"select": rule}), build=False)
        names = (
            list(files.train.column("name"))
            if isinstance(files.train, PackedClips)
            else [p.relative_to(shards).with_suffix("").as_posix() for p in files.train]
        )
        assert names == ["id1/v1/00001", "id2/v9/00002", "id3/w/00001"], train_dir
        assert files.notes == ["data.select: 3 of 5 scored clips pass (|offset| <= 1 frames, confidence >= 3)"]
        assert len(prepare_data(OmegaConf.merge(cfg, {"select": None}), build=False).train) == 5
    (shards / "index-00000-of-00001.jsonl").unlink()  # extracted without SyncNet weights: no scores anywhere
    cfg = OmegaConf.create(
        {"train_dir": str(shards), "val_dir": str(shards), "norm": str(tmp_path / "stats" / "norm.npz"), "select": rule}
    )
    files = prepare_data(cfg, build=False)
    assert len(files.train) == 5 and files.notes[0].startswith("note: no SyncNet scores for the 5 training clips")


def test_train_reads_a_pack_with_persistent_workers_and_says_what_select_kept(shards, tmp_path):
    from test_train_resume import TINY

    pack = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pack.py"), f"shards={shards}", f"out={tmp_path / 'packed'}"],
        capture_output=True,
        text=True,
    )
    assert pack.returncode == 0, pack.stderr
    assert "packed 5 clips" in pack.stdout
    bad = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pack.py"), f"shards={tmp_path / 'none'}", f"out={tmp_path / 'x'}"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    assert not (tmp_path / "x").exists()
    overrides = [o for o in TINY if not o.startswith(("data", "train.num_workers", "train.val"))]
    overrides += [
        "data=voxceleb",
        f"data.train_dir={tmp_path / 'packed'}",
        f"data.val_dir={shards}",
        f"data.norm={tmp_path / 'stats' / 'norm.npz'}",
        "data.window=16",
        "data.samples_per_clip=4",
        "data.select.min_confidence=3.0",
        "train.num_workers=2",
        "train.val_every=0",
        "train.max_steps=4",
        "train.ckpt_every=4",
        f"train.out_dir={tmp_path / 'run'}",
    ]
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data.select: 3 of 5 scored clips pass" in done.stdout + done.stderr
    assert (tmp_path / "run" / "checkpoint-000004.pth").is_file()


def test_benchmark_data_prints_the_loader_lines(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "data", "--sizes", "40", "80", "--frames", "70"]
    cmd += ["--batch", "8", "--batches", "2", "--extract-clips", "0", "--workdir", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-2:]
    assert re.fullmatch(r"loader peak RSS: 40 clips [\d.]+ MiB, 80 clips [\d.]+ MiB", last[0]), last
    assert re.fullmatch(r"loader start-up: 40 clips [\d.]+ s, 80 clips [\d.]+ s", last[1]), last
    assert "shard-folder loader" in done.stdout
