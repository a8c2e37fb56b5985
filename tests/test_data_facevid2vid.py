"""Face-vid2vid data (Table 5): renderer=facevid2vid extraction writes 51-d shards that record their layout,
compute_norm reads them into Face-vid2vid statistics, and shards of two layouts are never mixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from fixture_weights import fixture_state_dict
from omegaconf import OmegaConf
from safetensors.torch import save_file
from test_data_extract import _frames, _wav

from kdtalker.data import read_shard, write_shard
from kdtalker.data.dataset import MotionWindows
from kdtalker.data.extract import extract_folder
from kdtalker.data.extractors import facevid2vid_motion_fn
from kdtalker.data.norm_stats import compute_norm_stats, write_norm
from kdtalker.data.packed import pack_shards
from kdtalker.data.shards import MOTION_KEYS, Clip
from kdtalker.data.synthetic import generate_synthetic
from kdtalker.diffusion.loss import split_channels
from kdtalker.diffusion.motion import MotionNorm
from kdtalker.errors import CheckpointError, KDTalkerError, OutputError
from kdtalker.facevid2vid import FACEVID2VID_LAYOUT, HeadExpressionEstimator, KeypointDetector
from kdtalker.media import read_video, write_video
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

ROOT = Path(__file__).resolve().parent.parent
SIZE = 128  # the smallest crop the keypoint detector takes (the configured one is 256 px)
# the same networks, narrow: the detector's widths and the estimator's head (its trunk widths are fixed)
TINY = {
    "kp_detector": {"block_expansion": 4, "max_features": 16, "reshape_channel": 256},
    "he_estimator": {"block_expansion": 8, "max_features": 64},
}
FV = FACEVID2VID_LAYOUT


def _configs() -> dict:
    text = resources.files("kdtalker.configs").joinpath("renderer/facevid2vid.yaml").read_text()
    configs = OmegaConf.to_container(OmegaConf.create(text).configs)
    for part, values in TINY.items():
        configs[part].update(values)
    return configs


@pytest.fixture(scope="module")
def weights(tmp_path_factory, audio_ref) -> dict:
    """Tiny fixture-weight Face-vid2vid networks in SadTalker's safetensors layout, the fixture Wav2Lip encoder."""
    root = tmp_path_factory.mktemp("fv_weights")
    configs = _configs()
    nets = {
        "kp_extractor.": KeypointDetector(**configs["common"], **configs["kp_detector"]),
        "he_estimator.": HeadExpressionEstimator(**configs["common"], **configs["he_estimator"]),
    }
    flat = {}
    for prefix, net in nets.items():
        shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
        flat.update({prefix + k: v for k, v in fixture_state_dict({"shapes": shapes}, "fv-extract").items()})
        net.load_state_dict({k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)})
    save_file(flat, str(root / "SadTalker_V0.0.2_256.safetensors"))
    torch.save({"state_dict": audio_ref.weights("spec_wav2lip_audio_encoder.json")}, root / "wav2lip.pth")
    videos = root / "videos"
    (videos / "id01").mkdir(parents=True)
    for i, name in enumerate(["a.mp4", "id01/b.mp4"]):
        write_video(videos / name, _frames(i, 10), audio=_wav(root / f"{i}.wav", 0.5, i))
    motion_fn = facevid2vid_motion_fn(nets["kp_extractor."].eval(), nets["he_estimator."].eval())
    return {"root": root, "videos": videos, "motion_fn": motion_fn}


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _extract(weights: dict, out: Path, *extra: str) -> subprocess.CompletedProcess:
    root = weights["root"]
    tiny = [f"renderer.configs.{part}.{k}={v}" for part, values in TINY.items() for k, v in values.items()]
    return _script(
        "extract",
        "renderer=facevid2vid",
        f"renderer.weights={root / 'SadTalker_V0.0.2_256.safetensors'}",
        *tiny,
        f"videos={weights['videos']}",
        f"out={out}",
        f"wav2lip={root / 'wav2lip.pth'}",
        f"syncnet={root / 'absent.model'}",
        "device=cpu",
        f"size={SIZE}",
        "min_frames=8",
        "batch_size=4",
        "decode_workers=0",
        "torch_threads=1",
        *extra,
    )


def test_extract_facevid2vid_shards_and_their_norm(weights, tmp_path):
    out = tmp_path / "shards"
    done = _extract(weights, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 clips extracted" in done.stdout
    clip = read_shard(out / "a.npz")
    assert clip.layout == FV and clip.num_frames == 10
    assert set(clip.motion) == {"yaw", "pitch", "roll", "t", "exp", "kp"}  # no scale: Face-vid2vid has none
    assert clip.motion["exp"].shape == (10, 15, 3) and clip.motion["kp"].shape == (10, 15, 3)
    with np.load(out / "a.npz", allow_pickle=False) as data:
        assert str(data["layout"]) == "facevid2vid"
    assert json.loads((out / "index-00000-of-00001.jsonl").read_text().splitlines()[0])["layout"] == "facevid2vid"
    # the stored motion is the networks' on the decoded frames (batches of 4 across clips: float rounding)
    direct = weights["motion_fn"](read_video(weights["videos"] / "a.mp4", fps=25.0, size=SIZE))
    for key, value in clip.motion.items():
        np.testing.assert_allclose(value, direct[key].reshape(value.shape), rtol=1e-4, atol=1e-5, err_msg=key)

    norm_path = tmp_path / "norm.npz"
    wrote = _script("compute_norm", f"shards={out}", f"out={norm_path}")
    assert wrote.returncode == 0, wrote.stderr[-3000:]
    norm = MotionNorm.load(norm_path, FV)
    assert norm.mean.shape == norm.std.shape == (51,) and norm.kp_mean.shape == (45,)
    clips = [read_shard(out / "a.npz"), read_shard(out / "id01" / "b.npz")]
    raw = np.concatenate([FV.pack(**{n: c.motion[n] for n, _ in FV.parts}) for c in clips])
    np.testing.assert_allclose(norm.mean, raw.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.std, raw.std(0), rtol=1e-4, atol=1e-7)
    kp = np.concatenate([c.motion["kp"].reshape(-1, 45) for c in clips])
    np.testing.assert_allclose(norm.kp_mean, kp.mean(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="scale_mean"):  # not the official 70-d statistics
        MotionNorm.load(norm_path)

    # a second renderer's shards never join the folder (refused before any clip is read)
    with pytest.raises(OutputError, match="holds facevid2vid shards.*liveportrait motion into a folder of its own"):
        extract_folder(weights["videos"], out, None, None, None, layout=LIVEPORTRAIT_LAYOUT)


def _lp_clip(frames: int = 6) -> Clip:
    motion = {k: np.full((frames, *s), 0.5, np.float32) for k, s in MOTION_KEYS.items()}
    return Clip(motion, np.zeros((frames + 1, 512), np.float32))


def _fv_clip(frames: int = 6) -> Clip:
    motion = {n: np.zeros((frames, 15, 3) if n == "exp" else (frames, s), np.float32) for n, s in FV.parts}
    return Clip(
        {**motion, "kp": np.zeros((frames, 15, 3), np.float32)}, np.zeros((frames + 1, 512), np.float32), 25.0, FV
    )


def test_mixed_or_unknown_layouts_are_one_error(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_shard(shards / "a.npz", _lp_clip())
    write_shard(shards / "b.npz", _fv_clip())
    assert read_shard(shards / "a.npz").layout.name == "liveportrait" and read_shard(shards / "b.npz").layout == FV
    with pytest.raises(KDTalkerError, match=r"b.npz holds facevid2vid motion \(51-d\).*liveportrait motion \(70-d\)"):
        compute_norm_stats(sorted(shards.glob("*.npz")))
    mixed = _script("compute_norm", f"shards={shards}", f"out={tmp_path / 'norm.npz'}")
    lines = mixed.stderr.strip().splitlines()
    assert mixed.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and "b.npz" in lines[0]
    assert not (tmp_path / "norm.npz").exists()

    np.savez(tmp_path / "odd.npz", **_fv_clip().motion, aud_feat=np.zeros((7, 512), np.float32), layout="faceX")
    with pytest.raises(KDTalkerError, match="unknown motion layout 'faceX'"):
        read_shard(tmp_path / "odd.npz")
    # a Face-vid2vid shard's arrays under LivePortrait's name: the shapes say so
    np.savez(tmp_path / "lp.npz", **_fv_clip().motion, aud_feat=np.zeros((7, 512), np.float32), layout="liveportrait")
    with pytest.raises(KDTalkerError, match="no 'scale' array"):
        read_shard(tmp_path / "lp.npz")


def test_windows_and_statistics_in_the_facevid2vid_layout(tmp_path):
    """Synthetic Face-vid2vid clips: 51-d windows, the 51-d ori token (6 zeros, 45 keypoint values); LivePortrait
    statistics, a pack and the official loss split refuse them."""
    fv = dict(layout=FV, lips=(2, 6, 9, 13), eyes=(4, 11))
    paths = generate_synthetic(tmp_path / "s", 2, seed=1, min_frames=70, max_frames=80, **fv)
    norm_path = write_norm(paths, tmp_path / "norm.npz")
    norm = MotionNorm.load(norm_path, FV)
    windows = MotionWindows(paths, norm, 64, seed=0, log=lambda s: None)
    item = windows[0]
    assert item["x0"].shape == (64, 51) and item["ref"].shape == (51,) and item["ori"].shape == (51,)
    clip = read_shard(paths[0])
    r = windows.ref_index(0)
    kp = norm.normalize_kp(clip.motion["kp"][r].reshape(45))
    np.testing.assert_array_equal(item["ori"].numpy(), np.concatenate([np.zeros(6, np.float32), kp]))
    np.testing.assert_array_equal(item["ori"].numpy(), norm.canonical_token(clip.motion["kp"][r]))
    raw = FV.pack(**{n: clip.motion[n][r + 1] for n, _ in FV.parts})
    np.testing.assert_allclose(item["x0"][0].numpy(), norm.normalize(raw), rtol=1e-6, atol=1e-6)
    # the chosen lip keypoints move along one pattern with the mouth signal (rank 1 in time); the others drift freely
    exp = clip.motion["exp"].astype(np.float64)
    ratio = {}
    for name, kps in (("lips", [2, 6, 9, 13]), ("other", [0, 1, 3, 5])):
        centred = exp[:, kps].reshape(len(exp), -1) - exp[:, kps].reshape(len(exp), -1).mean(0)
        values = np.linalg.svd(centred, compute_uv=False)
        ratio[name] = values[1] / values[0]
    assert ratio["lips"] < 1e-5 < 0.1 < ratio["other"], ratio

    official = MotionNorm.fit(np.zeros((2, 70), np.float32), np.zeros((2, 63), np.float32))
    with pytest.raises(KDTalkerError, match=r"holds facevid2vid motion \(51-d\).*statistics are for 70-d"):
        MotionWindows(paths, official, 64, log=lambda s: None)
    with pytest.raises(KDTalkerError, match="a pack holds LivePortrait motion only"):
        pack_shards(tmp_path / "s", tmp_path / "packed", log=lambda s: None)
    assert not (tmp_path / "packed").exists()
    x = torch.zeros(1, 4, 51)
    with pytest.raises(ValueError, match="51-d motion needs its layout's"):
        split_channels(None, x.shape[-1])
    assert split_channels((FV.span("yaw", "t"), FV.slice("exp")), 51) == (slice(0, 6), slice(6, 51))
