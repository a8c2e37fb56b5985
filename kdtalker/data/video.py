"""Decode a video's frames as raw RGB through the imageio-ffmpeg binary (no OpenCV codec dependence)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

from kdtalker.errors import VideoError
from kdtalker.media import ffmpeg_exe


def read_frames(path: str | os.PathLike, fps: float = 25.0, size: int = 256) -> np.ndarray:
    """Video file -> (T, size, size, 3) uint8 RGB frames resampled to `fps`; VideoError if unreadable or empty."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video {path} not found")
    cmd = [
        ffmpeg_exe(),
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(path),
        "-an",
        "-vf",
        f"fps={fps},scale={size}:{size}",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise VideoError(f"video {path} is unreadable ({reason[-1] if reason else 'ffmpeg failed'})")
    frame_bytes = size * size * 3
    count = len(proc.stdout) // frame_bytes
    if count == 0:
        raise VideoError(f"video {path} has no video frames")
    return np.frombuffer(proc.stdout, np.uint8, count * frame_bytes).reshape(count, size, size, 3).copy()


def write_test_video(
    path: str | os.PathLike, frames: np.ndarray, fps: float = 25.0, audio: str | os.PathLike | None = None
) -> Path:
    """(T, H, W, 3) uint8 frames (+ optional audio file) -> mp4 via ffmpeg; used to make fixtures and demos."""
    path = Path(path)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    t, h, w, _ = frames.shape
    cmd = [
        ffmpeg_exe(),
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{w}x{h}",
        "-r",
        str(fps),
        "-i",
        "-",
    ]
    if audio is not None:
        cmd += ["-i", str(audio), "-c:a", "aac"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", str(path)]
    proc = subprocess.run(cmd, input=frames.tobytes(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise VideoError(f"could not write {path}: {proc.stderr.decode(errors='replace').strip()}")
    return path
