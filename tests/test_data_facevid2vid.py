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
from kdtalker.data.extract import extract_folder
from kdtalker.data.extractors import facevid2vid_motion_fn
from kdtalker.data.norm_stats import compute_norm_stats
from kdtalker.data.shards import MOTION_KEYS, Clip
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
