"""Video and audio reading for evaluation through the imageio-ffmpeg binary: native-size RGB frames, 16 kHz PCM16."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np

from kdtalker.errors import VideoError
from kdtalker.media import ffmpeg_exe


def video_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the first video stream, from ffmpeg's header (no decoding)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video {path} not found")
    header = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    for line in header.splitlines():
        if "Video:" in line:
            size = re.search(r"\b(\d{2,5})x(\d{2,5})\b", line)
            if size:
                return int(size.group(1)), int(size.group(2))
    raise VideoError(f"{path} holds no readable video stream")


def read_video(path: str | os.PathLike, max_seconds: float | None = None, fps: float | None = 25.0) -> np.ndarray:
    """Video -> (T, H, W, 3) uint8 RGB at native size (resampled to `fps` when given), the first `max_seconds` only."""
    width, height = video_size(path)
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path)]
    if max_seconds is not None:
        cmd += ["-t", f"{max_seconds}"]
    if fps:
        cmd += ["-vf", f"fps={fps}"]
    cmd += ["-an", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise VideoError(f"could not decode {path}: {proc.stderr.decode(errors='replace')[-400:]}")
    frame_bytes = width * height * 3
    count = len(proc.stdout) // frame_bytes
    if count == 0:
        raise VideoError(f"{path} has no video frames")
    return np.frombuffer(proc.stdout[: count * frame_bytes], np.uint8).reshape(count, height, width, 3)


def read_audio_pcm16(path: str | os.PathLike, max_seconds: float | None = None, sample_rate: int = 16000) -> np.ndarray:
    """Soundtrack of a video (or an audio file) -> (N,) int16 mono at `sample_rate` (ffmpeg's resampler)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path} not found")
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path)]
    if max_seconds is not None:
        cmd += ["-t", f"{max_seconds}"]
    cmd += ["-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-acodec", "pcm_s16le", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        raise VideoError(
            f"could not read the audio of {path}: {proc.stderr.decode(errors='replace')[-400:] or 'no audio stream'}"
        )
    return np.frombuffer(proc.stdout, np.int16).copy()
