"""Extraction at scale: torchrun ranks and job arrays share the clips, the index resumes a killed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixture_weights import fixture_state_dict
from test_data_extract import TINY_MOTION, _frames, _wav

from kdtalker.audio import load_audio
from kdtalker.audio.checkpoint import load_audio_encoder
from kdtalker.data import read_shard
from kdtalker.data.clip_index import read_index
from kdtalker.data.extract import extract_folder
from kdtalker.data.extractors import liveportrait_motion_fn, wav2lip_audio_fn
from kdtalker.media import write_video
from kdtalker.renderer import MotionExtractor
from kdtalker.renderer.checkpoints import load_motion_extractor
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

ROOT = Path(__file__).resolve().parent.parent
# Two speakers, each with a 00001.mp4: flat shard names would collide.
CLIPS = ["id001/vidA/00001", "id001/vidA/00002", "id002/vidB/00001", "id002/vidC/00001"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vox")
    work = tmp_path_factory.mktemp("wav")
    for i, name in enumerate(CLIPS):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / f"{name}.mp4", _frames(i, 12), audio=_wav(work / f"{i}.wav", 0.6, i))
    return root


@pytest.fixture(scope="module")
def tiny_extractors(audio_ref):
    shapes = {k: list(v.shape) for k, v in MotionExtractor(**TINY_MOTION).state_dict().items()}
    motion = load_motion_extractor(fixture_state_dict({"shapes": shapes}, "extract"), config=TINY_MOTION)
    encoder = load_audio_encoder({"state_dict": audio_ref.weights("spec_wav2lip_audio_encoder.json")})
    return liveportrait_motion_fn(motion), wav2lip_audio_fn(encoder, 25, 256)


def _extract(videos, out, extractors, **kwargs):
    motion_fn, audio_fn = extractors
    return extract_folder(
        videos, out, motion_fn, audio_fn, load_audio, min_frames=8, batch_size=5, layout=LIVEPORTRAIT_LAYOUT, **kwargs
    )


def test_torchrun_ranks_extract_each_clip_once_as_one_process_does(videos, audio_ref, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    shapes = {k: list(v.shape) for k, v in MotionExtractor().state_dict().items()}
    torch.save(fixture_state_dict({"shapes": shapes}, "extract"), weights / "motion_extractor.pth")
    torch.save({"state_dict": audio_ref.weights("spec_wav2lip_audio_encoder.json")}, weights / "wav2lip.pth")
    args = [
        str(ROOT / "scripts" / "extract.py"),
        f"videos={videos}",
        f"motion_extractor={weights / 'motion_extractor.pth'}",
        f"wav2lip={weights / 'wav2lip.pth'}",
        f"syncnet={weights / 'syncnet_v2.model'}",  # absent: a note, no scores
        "device=cpu",
        "size=64",  # the full-size extractor on 64x64 frames: the same code path, 16x less work
        "min_frames=8",
        "batch_size=5",
        "decode_workers=1",
        "torch_threads=1",
    ]
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    one = subprocess.run(
        [sys.executable, *args, f"out={tmp_path / 'one'}"], capture_output=True, text=True, env=env, timeout=300
    )
    assert one.returncode == 0, one.stderr[-3000:]
    assert one.stdout.count("note: no SyncNet weights") == 1 and "4 clips extracted" in one.stdout
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run(
        [*torchrun, *args, f"out={tmp_path / 'two'}"], capture_output=True, text=True, env=env, timeout=300
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "job 1 of 2: 2 clips extracted" in two.stdout and "job 2 of 2: 2 clips extracted" in two.stdout
    assert two.stdout.count("note: no SyncNet weights") == 1  # said once, by the first job

    files = sorted(p.name for p in (tmp_path / "two").glob("index-*.jsonl"))
    assert files == ["index-00000-of-00002.jsonl", "index-00001-of-00002.jsonl"]
    lines = [json.loads(line) for f in files for line in (tmp_path / "two" / f).read_text().splitlines()]
    assert sorted(r["clip"] for r in lines) == CLIPS  # every clip exactly once, over both ranks
    index = read_index(tmp_path / "two")
    assert index["id002/vidB/00001"]["speaker"] == "id002" and index["id002/vidB/00001"]["video"] == "vidB"
    assert index["id002/vidB/00001"]["sync_offset"] is None and index["id002/vidB/00001"]["sync_conf"] is None
    assert read_index(tmp_path / "one").keys() == index.keys()
    for name in CLIPS:
        a, b = read_shard(tmp_path / "one" / f"{name}.npz"), read_shard(tmp_path / "two" / f"{name}.npz")
        np.testing.assert_array_equal(a.aud_feat, b.aud_feat)
        for key in a.motion:  # batches mix other clips' frames: equal up to float rounding
            np.testing.assert_allclose(a.motion[key], b.motion[key], rtol=1e-5, atol=1e-5, err_msg=f"{name} {key}")


def test_job_array_shares_are_disjoint_and_complete(videos, tiny_extractors, tmp_path):
    out = tmp_path / "shards"
    first = _extract(videos, out, tiny_extractors, shard=0, num_shards=2, log=lambda s: None)
    second = _extract(videos, out, tiny_extractors, shard=1, num_shards=2, log=lambda s: None, decode_workers=2)
    assert sorted(first.written + second.written) == CLIPS and not set(first.written) & set(second.written)
    assert sorted(read_index(out)) == CLIPS
    # a later run with another split finds everything done, from the index alone
    again = _extract(videos, out, tiny_extractors, log=lambda s: None)
    assert again.written == [] and sorted(again.already_done) == CLIPS


def test_killed_run_resumes_without_losing_or_repeating_a_clip(videos, tiny_extractors, tmp_path):
    out = tmp_path / "shards"
    full = _extract(videos, out, tiny_extractors, log=lambda s: None, sync_fn=None)
    assert sorted(full.written) == CLIPS
    reference = {name: read_shard(out / f"{name}.npz") for name in CLIPS}

    # The state a kill leaves: two clips indexed, a third renamed into place but not yet indexed, the index's last
    # line torn mid-write, a temporary sibling of the dead process in a shard folder, the fourth not started.
    index_file = out / "index-00000-of-00001.jsonl"
    lines = index_file.read_text().splitlines(keepends=True)
    by_clip = {json.loads(line)["clip"]: line for line in lines}
    index_file.write_text(by_clip[CLIPS[0]] + by_clip[CLIPS[1]] + by_clip[CLIPS[2]][:25])
    (out / f"{CLIPS[3]}.npz").unlink()
    stray = out / "id002" / "vidC" / ".00001.npz.999999999.abcd1234.part"
    stray.write_bytes(b"half a shard")
    stamps = {name: (out / f"{name}.npz").stat().st_mtime_ns for name in CLIPS[:2]}
    assert sorted(read_index(out)) == CLIPS[:2]  # the torn line is not counted

    lines_logged: list[str] = []

    def sync_fn(frames, wav):
        return 0, 5.0

    resumed = _extract(videos, out, tiny_extractors, log=lines_logged.append, sync_fn=sync_fn)
    assert sorted(resumed.written) == CLIPS[2:] and sorted(resumed.already_done) == CLIPS[:2]
    assert all((out / f"{name}.npz").stat().st_mtime_ns == stamps[name] for name in CLIPS[:2])
    assert not stray.exists()  # cleared by the next write into its folder
    assert not list(out.rglob("*.part"))
    index = read_index(out)
    assert sorted(index) == CLIPS
    assert index[CLIPS[3]]["sync_offset"] == 0 and index[CLIPS[3]]["sync_conf"] == 5.0
    records = [line for line in index_file.read_text().splitlines() if line.startswith("{") and line.endswith("}")]
    assert sorted(json.loads(r)["clip"] for r in records) == CLIPS  # each clip's record once
    for name in CLIPS:
        np.testing.assert_allclose(
            read_shard(out / f"{name}.npz").motion["exp"], reference[name].motion["exp"], rtol=1e-5, atol=1e-6
        )


def test_syncnet_scores_each_clip_as_the_evaluation_does(videos, tmp_path):
    """scripts/extract.py wires the evaluation's SyncNet in (kdtalker.data may not import kdtalker.eval)."""
    import importlib.util

    from kdtalker.eval.syncnet import SyncNet, sync_scores
    from kdtalker.eval.weights import load_syncnet
    from kdtalker.media import read_audio_pcm16, read_video

    spec = importlib.util.spec_from_file_location("extract_script", ROOT / "scripts" / "extract.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    notes: list[str] = []
    assert script.syncnet_fn(str(tmp_path / "absent.model"), torch.device("cpu"), log=notes.append) is None
    assert len(notes) == 1 and notes[0].startswith("note: no SyncNet weights at") and "keeps them all" in notes[0]

    state = {k: v for k, v in SyncNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "syncnet_v2.model")
    score = script.syncnet_fn(str(tmp_path / "syncnet_v2.model"), torch.device("cpu"))
    video = videos / f"{CLIPS[0]}.mp4"
    frames = read_video(video, fps=25.0)
    wav = load_audio(video, kind="video")
    offset, conf = score(frames, wav)
    expected = sync_scores(load_syncnet(tmp_path / "syncnet_v2.model"), frames[..., ::-1], read_audio_pcm16(video))
    assert isinstance(offset, int) and offset == expected.offset
    assert conf == pytest.approx(expected.conf, rel=1e-3, abs=1e-3)


def test_job_position_from_torchrun_or_job_array(tmp_path):
    from kdtalker.data.jobs import job_position, job_share
    from kdtalker.errors import ConfigError

    assert job_position(None, None, env={}) == (0, 1, 0)
    assert job_position(None, None, env={"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    assert job_position(1, 2, env={"RANK": "3", "WORLD_SIZE": "4"}) == (1, 2, 0)  # a job array's own numbers win
    for shard, num in ((2, 2), (-1, 2), (1, None), (0, 0)):
        with pytest.raises(ConfigError):
            job_position(shard, num, env={})
    items = list(range(10))
    shares = [job_share(items, i, 3) for i in range(3)]
    assert sorted(sum(shares, [])) == items and shares[1] == [1, 4, 7]
    # by folder: a folder's clips stay with one job (no two jobs write into one folder), counts balanced greedily
    clips = ["a/1", "a/2", "a/3", "b/1", "c/1", "c/2", "d/1"]
    shares = [job_share(clips, i, 2, group=lambda c: c.split("/")[0]) for i in range(2)]
    assert shares == [["a/1", "a/2", "a/3", "d/1"], ["b/1", "c/1", "c/2"]]
    assert job_share(["x/1", "x/2", "x/3"], 1, 2, group=lambda c: c.split("/")[0]) == ["x/2"]  # one folder: strided
    bad = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "extract.py"), f"videos={tmp_path}", f"out={tmp_path / 'o'}"]
        + ["shard=2", "num_shards=2"],
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode == 1 and bad.stderr.startswith("error: shard=2 num_shards=2") and "Traceback" not in bad.stderr
    )
    assert not (tmp_path / "o").exists()
