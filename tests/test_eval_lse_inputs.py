"""LSE inputs: the official JPEG frame dump and `-async 1` wav (lse.frames=jpeg, lse.audio=async), the decoded
frames and plain PCM (raw, plain), the dump folder's removal, and too-short videos counted as skipped.

Run as a script (`python tests/test_eval_lse_inputs.py`) it prints the measured LSE figures of the audio reference
clip written as H.264 and scored with each input choice, next to the lossless reference values.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from kdtalker.config import compose_config
from kdtalker.errors import VideoError
from kdtalker.eval.protocol import Scorer
from kdtalker.eval.syncnet import lse_inputs, sync_scores
from kdtalker.eval.weights import load_syncnet
from kdtalker.media import ffmpeg_exe, read_audio_pcm16, read_video
from kdtalker.pipeline.video import VideoWriter

REPO = Path(__file__).resolve().parent.parent


def _write_clip(path: Path, frames_bgr: np.ndarray, pcm16: np.ndarray) -> Path:
    """BGR frames + int16 16 kHz audio -> H.264 + AAC mp4, as the pipeline writes its videos."""
    h, w = frames_bgr.shape[1:3]
    with VideoWriter(path, w, h, 25.0, audio=pcm16.astype(np.float32) / 32768.0, sample_rate=16000) as writer:
        writer.write(np.ascontiguousarray(frames_bgr[..., ::-1]))
    return path


def _scorer(weights: Path, **lse) -> Scorer:
    """A Scorer with the packaged evaluation config, on the CPU, these SyncNet weights and LSE settings."""
    cfg = compose_config("evaluate", ["device=cpu", f"weights.syncnet={weights}"])
    return Scorer(OmegaConf.merge(cfg, {"lse": lse}))


@pytest.fixture(scope="module")
def clip(tmp_path_factory, audio_ref):
    root = tmp_path_factory.mktemp("lse")
    torch.save(audio_ref.weights("spec_syncnet.json"), root / "syncnet_v2.model")
    # 8 frames (3 SyncNet windows) of the reference clip, shrunk (SyncNet resizes to 224 anyway): a fast test
    frames = np.stack([cv2.resize(f, (96, 96)) for f in audio_ref["clip_frames_bgr"][:8]])
    video = _write_clip(root / "clip.mp4", frames, audio_ref["clip_audio_pcm16"][: 8 * 640])
    return root, video


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """Every tempfile folder goes under here, so a test can see that none is left behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_jpeg_frames_and_async_audio_are_the_official_dump(clip, temp_root, tmp_path):
    root, video = clip
    got = _scorer(root / "syncnet_v2.model", frames="jpeg", audio="async").lse(video)
    assert list(temp_root.iterdir()) == []  # the dump folder is gone
    # the two official commands, run here by hand
    mine = tmp_path / "mine"
    mine.mkdir()
    ff = ffmpeg_exe()
    subprocess.run(
        [ff, "-y", "-i", str(video), "-threads", "1", "-f", "image2", str(mine / "%06d.jpg")],
        check=True,
        capture_output=True,
    )
    wav = mine / "audio.wav"
    cmd = [ff, "-y", "-i", str(video), "-async", "1", "-ac", "1", "-vn", "-acodec", "pcm_s16le", "-ar", "16000"]
    subprocess.run([*cmd, str(wav)], check=True, capture_output=True)
    frames = np.stack([cv2.imread(str(f)) for f in sorted(mine.glob("*.jpg"))])
    pcm, rate = sf.read(wav, dtype="int16")
    assert rate == 16000 and len(frames) == 8
    want = sync_scores(load_syncnet(root / "syncnet_v2.model"), frames, pcm)
    assert got == {"offset": want.offset, "conf": want.conf, "min_dist": want.min_dist}
    # and the dump is not the decoded stream: JPEG is lossy
    assert not np.array_equal(frames, read_video(video)[..., ::-1])


def test_raw_frames_and_plain_audio_are_the_decoded_stream(clip, temp_root):
    root, video = clip
    got = _scorer(root / "syncnet_v2.model", frames="raw", audio="plain").lse(video)
    frames, pcm = read_video(video, fps=None)[..., ::-1], read_audio_pcm16(video)
    want = sync_scores(load_syncnet(root / "syncnet_v2.model"), np.ascontiguousarray(frames), pcm)
    assert got == {"offset": want.offset, "conf": want.conf, "min_dist": want.min_dist}
    assert list(temp_root.iterdir()) == []


def test_dump_folder_removed_when_ffmpeg_fails(tmp_path, temp_root):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoError, match="bad.mp4"):
        lse_inputs(bad, "jpeg", "async")
    assert list(temp_root.iterdir()) == []


def test_too_short_video_is_skipped_not_scored(tmp_path, audio_ref):
    # 5 frames: sync_scores needs 6 (one 5-frame window past the first); no SyncNet is loaded for it
    video = _write_clip(tmp_path / "short.mp4", audio_ref["clip_frames_bgr"][:5], audio_ref["clip_audio_pcm16"][:3200])
    assert _scorer(tmp_path / "absent.model").lse(video) == {"skipped": "too short", "frames": 5}


def measure(out: Path) -> None:
    """Print LSE-C / LSE-D of the audio reference clip (40 frames, fixture SyncNet) under each input choice."""
    sys.path.insert(0, str(Path(__file__).parent))
    from reference import ReferenceSet

    ref = ReferenceSet("audio")
    weights = out / "syncnet_v2.model"
    torch.save(ref.weights("spec_syncnet.json"), weights)
    frames, pcm = ref["clip_frames_bgr"], ref["clip_audio_pcm16"]
    lossless = sync_scores(load_syncnet(weights), frames, pcm)
    print(
        f"reference (official code, lossless frames): conf {float(ref['clip_conf']):.4f}  "
        f"min_dist {float(ref['clip_min_dist']):.4f}  offset {int(ref['clip_offset'])}"
    )
    print(
        f"ours, lossless frames:                      conf {lossless.conf:.4f}  min_dist {lossless.min_dist:.4f}  "
        f"offset {lossless.offset}"
    )
    video = _write_clip(out / "clip.mp4", frames, pcm)
    for f in ("raw", "jpeg"):
        for a in ("plain", "async"):
            r = _scorer(weights, frames=f, audio=a).lse(video)
            print(
                f"H.264 mp4, frames={f:4s} audio={a:5s}:         conf {r['conf']:.4f}  min_dist {r['min_dist']:.4f}  "
                f"offset {r['offset']}  (vs lossless: conf {r['conf'] - lossless.conf:+.4f}, "
                f"min_dist {r['min_dist'] - lossless.min_dist:+.4f})"
            )


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        measure(Path(folder))
