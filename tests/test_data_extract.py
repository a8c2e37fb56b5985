"""Extraction: generated clips -> shards; unusable clips get a line and the rest go on; resume; official .mat import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fixture_weights import fixture_state_dict
from scipy.io import savemat

from kdtalker.audio import load_audio
from kdtalker.audio.checkpoint import load_audio_encoder
from kdtalker.data import read_shard, write_shard
from kdtalker.data.extract import extract_folder, import_official
from kdtalker.data.extractors import liveportrait_motion_fn, wav2lip_audio_fn
from kdtalker.data.shards import MOTION_KEYS, Clip
from kdtalker.errors import KDTalkerError
from kdtalker.media import read_video, write_video
from kdtalker.renderer import MotionExtractor
from kdtalker.renderer.checkpoints import load_motion_extractor
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT as LP

ROOT = Path(__file__).resolve().parent.parent
TINY_MOTION = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))  # same architecture, small enough for CPU tests


@pytest.fixture(scope="module")
def extractors(audio_ref):
    """Fixture-weight motion extractor (tiny ConvNeXtV2) and the full-size fixture-weight Wav2Lip audio encoder."""
    shapes = {k: list(v.shape) for k, v in MotionExtractor(**TINY_MOTION).state_dict().items()}
    motion = load_motion_extractor(fixture_state_dict({"shapes": shapes}, "extract"), config=TINY_MOTION)
    encoder = load_audio_encoder({"state_dict": audio_ref.weights("spec_wav2lip_audio_encoder.json")})
    return liveportrait_motion_fn(motion), wav2lip_audio_fn(encoder, 25, 256)


def _frames(seed: int, n: int) -> np.ndarray:
    """Smooth moving colour blobs, (n, 64, 64, 3) uint8 (upscaled to 256 by the reader)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    out = []
    for i in range(n):
        cx, cy = 0.5 + 0.2 * np.sin(0.3 * i + seed), 0.5 + 0.2 * np.cos(0.2 * i)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05)
        out.append(np.stack([blob, 1 - blob, rng.uniform() * blob], -1) * 255)
    return np.asarray(out, np.uint8)


def _wav(path: Path, seconds: float, seed: int) -> Path:
    sr = 16000
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    wav = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.shape)
    sf.write(path, wav.astype(np.float32), sr)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """videos/: three good clips (one in a sub-folder), one without audio, one too short, one unreadable."""
    root = tmp_path_factory.mktemp("videos")
    work = tmp_path_factory.mktemp("work")
    (root / "id01").mkdir()
    for i, name in enumerate(["a.mp4", "b.mp4", "id01/a.mp4"]):
        write_video(root / name, _frames(i, 12), audio=_wav(work / f"{i}.wav", 0.6, i))
    write_video(root / "silent.mp4", _frames(5, 12))
    write_video(root / "short.mp4", _frames(6, 3), audio=_wav(work / "s.wav", 0.12, 6))
    (root / "broken.mp4").write_bytes(b"not a video at all" * 50)
    return root


def test_extract_folder_skips_bad_clips_and_resumes(clips, extractors, tmp_path):
    motion_fn, audio_fn = extractors
    out = tmp_path / "shards"
    lines: list[str] = []
    report = extract_folder(
        clips, out, motion_fn, audio_fn, load_audio, min_frames=8, batch_size=5, log=lines.append, layout=LP
    )

    assert sorted(report.written) == ["a", "b", "id01/a"]
    assert sorted(report.skipped) == ["broken", "short", "silent"]
    assert "no audio track" in report.skipped["silent"]
    assert "too short" in report.skipped["short"]
    assert "could not be decoded" in report.skipped["broken"] or "unreadable" in report.skipped["broken"]
    assert len(lines) == 3 and all(line.startswith("skip ") for line in lines)
    # shards mirror the video folder, one index file per job; no temp files left
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.npz",
        "b.npz",
        "id01/a.npz",
        "index-00000-of-00001.jsonl",
    ]

    clip = read_shard(out / "a.npz")
    frames = read_video(clips / "a.mp4", fps=25.0, size=256)
    assert clip.num_frames == len(frames) == 12
    assert clip.motion["exp"].shape == (12, 21, 3) and clip.motion["yaw"].shape == (12, 1)
    assert clip.aud_feat.shape[1] == 512 and clip.aud_feat.dtype == np.float32
    # audio features: one per 40 ms of the clip's sound track; the video and audio stream lengths are kept apart
    assert clip.aud_feat.shape[0] == len(load_audio(clips / "a.mp4")) // 640
    # the stored motion is the extractor's output on the decoded frames (batching does not change it)
    direct = motion_fn(frames)
    for key in ("yaw", "t", "exp", "kp", "scale"):
        np.testing.assert_allclose(clip.motion[key], direct[key].reshape(clip.motion[key].shape), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clip.aud_feat, audio_fn(load_audio(clips / "a.mp4")), rtol=1e-5, atol=1e-6)

    # resume: finished shards are left alone, a missing one is redone
    stamp = (out / "b.npz").stat().st_mtime_ns
    (out / "a.npz").unlink()
    again = extract_folder(
        clips, out, motion_fn, audio_fn, load_audio, min_frames=8, batch_size=5, log=lines.append, layout=LP
    )
    assert again.written == ["a"] and sorted(again.already_done) == ["b", "id01/a"]
    assert (out / "b.npz").stat().st_mtime_ns == stamp
    # the same motion; clips share motion-extractor batches, so other neighbours round differently
    np.testing.assert_allclose(read_shard(out / "a.npz").motion["exp"], clip.motion["exp"], rtol=1e-5, atol=1e-6)


def test_damaged_shards_are_redone_and_disk_errors_stop(clips, extractors, tmp_path, monkeypatch):
    import errno

    import kdtalker.data.extract as extract
    from kdtalker.errors import OutputError

    motion_fn, audio_fn = extractors
    out = tmp_path / "shards"
    as_video = lambda p: load_audio(p, kind="video")  # noqa: E731 - what scripts/extract.py passes
    lines: list[str] = []
    first = extract_folder(
        clips, out, motion_fn, audio_fn, as_video, min_frames=8, batch_size=5, log=lines.append, layout=LP
    )
    assert "training clip needs a readable sound track" in first.skipped["silent"]  # worded for a video
    assert "speech recording" not in first.skipped["silent"]
    whole = (out / "b.npz").read_bytes()
    before = read_shard(out / "b.npz")
    (out / "b.npz").write_bytes(whole[: len(whole) // 2])  # a shard cut short (killed copy, full disk, ...)
    lines.clear()
    again = extract_folder(
        clips, out, motion_fn, audio_fn, as_video, min_frames=8, batch_size=5, log=lines.append, layout=LP
    )
    assert again.written == ["b"] and sorted(again.already_done) == ["a", "id01/a"]
    assert any(line.startswith("redo ") and "b.npz" in line for line in lines)
    redone = read_shard(out / "b.npz")  # whole again (batched with other neighbours: equal up to rounding)
    np.testing.assert_allclose(redone.motion["exp"], before.motion["exp"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(redone.aud_feat, before.aud_feat)

    def disk_full(path, clip):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(extract, "write_shard", disk_full)
    with pytest.raises(OutputError, match="disk is full.*extraction stopped"):
        extract_folder(
            clips,
            tmp_path / "more",
            motion_fn,
            audio_fn,
            as_video,
            min_frames=8,
            batch_size=5,
            log=lines.append,
            layout=LP,
        )
    assert list((tmp_path / "more").iterdir()) == []


def test_killed_write_leaves_no_shard(tmp_path, monkeypatch):
    clip = Clip(
        {k: np.zeros((5, *s), np.float32) for k, s in MOTION_KEYS.items()},
        np.zeros((6, 512), np.float32),
    )

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", die)
    with pytest.raises(KeyboardInterrupt):
        write_shard(tmp_path / "x.npz", clip)
    assert list(tmp_path.iterdir()) == []


def test_import_official_mat(tmp_path):
    rng = np.random.default_rng(0)
    t = 30
    official = {
        "yaw": rng.normal(size=(t, 1)),
        "pitch": rng.normal(size=(t, 1)),
        "roll": rng.normal(size=(t, 1)),
        "t": rng.normal(size=(t, 3)),
        "exp": rng.normal(size=(t, 21, 3)),
        "scale": rng.normal(size=(t, 1)),
        "kp": rng.normal(size=(t, 21, 3)),
        "aud_feat": rng.normal(size=(t + 1, 512)),
    }
    mats = tmp_path / "mats"
    mats.mkdir()
    savemat(mats / "id1.mat", {k: v.astype(np.float32) for k, v in official.items()})
    (mats / "bad.mat").write_bytes(b"junk")
    lines: list[str] = []
    report = import_official(mats, tmp_path / "shards", log=lines.append)
    assert report.written == ["id1"] and list(report.skipped) == ["bad"] and "bad.mat" in lines[0]
    clip = read_shard(tmp_path / "shards" / "id1.npz")
    for key in ("yaw", "t", "exp", "kp"):
        np.testing.assert_array_equal(clip.motion[key], official[key].astype(np.float32))
    np.testing.assert_array_equal(clip.aud_feat, official["aud_feat"].astype(np.float32))
    assert clip.num_aligned == min(t - 1, t + 1 - 2)
    # the .mat is also readable directly by the training loader
    np.testing.assert_array_equal(read_shard(mats / "id1.mat").motion["exp"], clip.motion["exp"])


def test_bad_shard_is_one_clear_error(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"junk")
    with pytest.raises(KDTalkerError, match="x.npz is not a shard"):
        read_shard(tmp_path / "x.npz")
    np.savez(tmp_path / "cut.npz", exp=np.zeros((3, 21, 3)))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "cut.npz").read_bytes()[:100])
    with pytest.raises(KDTalkerError, match="unreadable"):
        read_shard(tmp_path / "cut.npz")
    np.savez(tmp_path / "y.npz", exp=np.zeros((3, 21, 3)), aud_feat=np.zeros((3, 512)))
    with pytest.raises(KDTalkerError, match="no 'scale'"):
        read_shard(tmp_path / "y.npz")


def test_extract_script_errors_and_imports(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "extract.py"), *args], capture_output=True, text=True, cwd=tmp_path
        )

    missing = run("videos=nowhere", f"out={tmp_path / 'o'}", "motion_extractor=nope.pth")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "nope.pth" in missing.stderr or "not found" in missing.stderr
    mats = tmp_path / "mats"
    mats.mkdir()
    savemat(
        mats / "c.mat",
        {
            "yaw": np.zeros((4, 1)),
            "pitch": np.zeros((4, 1)),
            "roll": np.zeros((4, 1)),
            "t": np.zeros((4, 3)),
            "exp": np.zeros((4, 21, 3)),
            "scale": np.ones((4, 1)),
            "kp": np.zeros((4, 21, 3)),
            "aud_feat": np.zeros((5, 512)),
        },
    )
    ok = run(f"mat_dir={mats}", f"out={tmp_path / 'shards'}")
    assert ok.returncode == 0, ok.stderr
    assert "1 clips extracted" in ok.stdout and (tmp_path / "shards" / "c.npz").is_file()
