"""Paste-back into the full image and the streamed ffmpeg writer (frame count, fps, size, codecs, audio length)."""

from __future__ import annotations

import numpy as np
import pytest

from kdtalker.errors import VideoError
from kdtalker.fileio import atomic_path
from kdtalker.media import probe_video
from kdtalker.pipeline.paste import PasteBack, feathered_mask
from kdtalker.pipeline.video import VideoWriter


def test_feathered_mask():
    m = feathered_mask(100, 60, 0.1)
    assert m.shape == (100, 60) and m.dtype == np.float32
    assert m[50, 30] == 1.0 and m[0, 30] < 0.05 and m[50, 0] < 0.05
    assert np.all(np.diff(m[50, :30]) >= 0)  # rises monotonically towards the inside
    open_left = feathered_mask(100, 60, 0.1, fade=(False, True, True, True))
    assert open_left[50, 0] == 1.0


def test_paste_back_region_and_blend():
    original = np.zeros((300, 400, 3), np.uint8)
    paste = PasteBack.from_box(original, (100.0, 50.0, 300.0, 250.0))
    frames = np.full((2, 512, 512, 3), 255, np.uint8)
    out = paste(frames)
    assert out.shape == (2, 300, 400, 3)
    assert np.all(out[:, 150, 200] == 255)  # centre of the box: the animated face
    assert np.all(out[:, :50] == 0) and np.all(out[:, :, :100] == 0) and np.all(out[:, 250:] == 0)  # outside untouched
    assert 0 < out[0, 51, 200, 0] < 128  # the seam is feathered
    # Pasting back the unchanged crop reproduces the original (up to resampling).
    rng = np.random.default_rng(0)
    smooth = np.clip(np.cumsum(rng.normal(0, 2, (300, 400, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    import cv2

    crop = cv2.resize(smooth[50:250, 100:300], (512, 512), interpolation=cv2.INTER_CUBIC)
    restored = PasteBack.from_box(smooth, (100.0, 50.0, 300.0, 250.0))(crop[None])[0]
    assert np.abs(restored.astype(int) - smooth.astype(int)).mean() < 2.0


def test_paste_back_at_the_image_edge():
    original = np.zeros((200, 200, 3), np.uint8)
    out = PasteBack.from_box(original, (-20.0, 0.0, 120.0, 140.0))(np.full((1, 512, 512, 3), 200, np.uint8))[0]
    assert out[70, 0, 0] == 200  # the left side touches the image border: no fade there


def test_writer_counts_fps_size_and_audio(tmp_path):
    frames, fps, rate = 7, 25, 16000
    audio = (0.2 * np.sin(np.arange(frames * rate // fps) / rate * 2 * np.pi * 300)).astype(np.float32)
    path = tmp_path / "v.mp4"
    with VideoWriter(path, 64, 48, fps, audio=audio, sample_rate=rate) as writer:
        for i in range(frames):
            writer.write(np.full((48, 64, 3), i * 30, np.uint8))
    info = probe_video(path)
    assert info["frames"] == frames and info["fps"] == fps
    assert (info["width"], info["height"]) == (64, 48)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert abs(info["audio_duration"] - frames / fps) < 0.03


def test_writer_rejects_bad_frames_and_leaves_nothing(tmp_path):
    out = tmp_path / "bad.mp4"
    with pytest.raises(VideoError, match="frames must be uint8"):
        with atomic_path(out) as tmp, VideoWriter(tmp, 64, 64) as writer:
            writer.write(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(VideoError, match="no frames"):
        with atomic_path(out) as tmp, VideoWriter(tmp, 64, 64):
            pass
    with pytest.raises(VideoError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", 63, 64)
    assert list(tmp_path.iterdir()) == []
