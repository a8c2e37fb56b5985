"""Everything that runs ffmpeg to read media: the binary, a stream header, decoded RGB frames, 16 kHz PCM.

The binary is the one imageio-ffmpeg ships (or the one IMAGEIO_FFMPEG_EXE names; where imageio-ffmpeg is not
installed, an `ffmpeg` on the PATH); no ffprobe, no OpenCV codecs.
Writing streams lives with its user (`pipeline.video.VideoWriter`); `write_video` here makes small test clips.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np

from kdtalker.errors import VideoError


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary; VideoError saying how to get one when there is none."""
    try:
        import imageio_ffmpeg  # imported here: the package works without it where no video is read or written
    except ImportError:
        found = shutil.which("ffmpeg")
        if found is None:
            raise VideoError(
                "no ffmpeg binary found: imageio-ffmpeg is not installed and there is no ffmpeg on the PATH; "
                "`pip install -r requirements.txt`"
            ) from None
        return found
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise VideoError(
            f"no ffmpeg binary found ({exc}); reinstall imageio-ffmpeg (`pip install -r requirements.txt`)"
        ) from exc


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video {path} not found")
    return path


def _header(path: Path) -> dict:
    """ffmpeg's stream header: dict(video_codec, width, height, fps, audio_codec, sample_rate, channels); VideoError
    if there is no video stream."""
    info: dict = {"video_codec": None, "audio_codec": None, "fps": None, "width": None, "height": None}
    info.update(sample_rate=None, channels=None)
    header = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    for line in header.splitlines():
        line = line.strip()
        if "Video:" in line and info["video_codec"] is None:
            info["video_codec"] = line.split("Video:")[1].split()[0].strip(",")
            size = re.search(r"\b(\d{2,5})x(\d{2,5})\b", line)
            fps = re.search(r"([\d.]+) fps", line)
            if size:
                info["width"], info["height"] = int(size.group(1)), int(size.group(2))
            if fps:
                info["fps"] = float(fps.group(1))
        elif "Audio:" in line and info["audio_codec"] is None:
            info["audio_codec"] = line.split("Audio:")[1].split()[0].strip(",")
            rate = re.search(r"(\d+) Hz", line)
            layout = re.search(r"Hz, ([^,]+)", line)
            info["sample_rate"] = int(rate.group(1)) if rate else None
            if layout:
                words = {"mono": 1, "stereo": 2}
                count = re.match(r"(\d+)", layout.group(1))
                info["channels"] = words.get(layout.group(1).strip(), int(count.group(1)) if count else None)
    if info["video_codec"] is None or info["width"] is None:
        raise VideoError(f"video {path} is unreadable: it holds no readable video stream ({header.strip()[-300:]})")
    return info


def video_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the first video stream, from ffmpeg's header (no decoding)."""
    info = _header(_existing(path))
    return info["width"], info["height"]


def probe_video(path: str | os.PathLike) -> dict:
    """Read a video back: dict(frames, fps, width, height, video_codec, audio_codec, sample_rate, channels,
    audio_duration, duration)."""
    path = _existing(path)
    info = _header(path)
    info["frames"], info["duration"] = _count(path, "0:v:0")
    info["audio_duration"] = _count(path, "0:a:0")[1] if info["audio_codec"] else None
    return info


def video_duration(path: str | os.PathLike) -> float:
    """Seconds of the first video stream, by decoding it (no frames kept): exact where headers are not."""
    return _count(_existing(path), "0:v:0")[1]


def _count(path: Path, stream: str) -> tuple[int, float]:
    """Decode one stream to null: (number of video frames (0 for audio), its duration in seconds)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-progress", "pipe:1", "-i", str(path)]
    log = subprocess.run([*cmd, "-map", stream, "-f", "null", "-"], capture_output=True, text=True)
    frames = [int(v) for v in re.findall(r"^frame=(\d+)", log.stdout, re.M)]
    times = [int(v) for v in re.findall(r"^out_time_us=(\d+)", log.stdout, re.M)]
    return (frames[-1] if frames else 0), (times[-1] / 1e6 if times else 0.0)


def read_video(
    path: str | os.PathLike,
    fps: float | None = None,
    size: int | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Video -> (T, H, W, 3) uint8 RGB: native size or scaled to size x size, resampled to `fps` when given."""
    return np.concatenate(list(iter_video(path, fps=fps, size=size, max_seconds=max_seconds, batch=64)))


def iter_video(
    path: str | os.PathLike,
    fps: float | None = None,
    size: int | None = None,
    max_seconds: float | None = None,
    batch: int = 16,
) -> Iterator[np.ndarray]:
    """`read_video` in batches (b, H, W, 3), decoded as they are read (the whole video is never in memory);
    VideoError if unreadable or without frames."""
    path = _existing(path)
    width, height = video_size(path) if size is None else (size, size)
    frame_bytes = width * height * 3
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path)]
    if max_seconds is not None:
        cmd += ["-t", f"{max_seconds}"]
    filters = ([f"fps={fps}"] if fps else []) + ([f"scale={size}:{size}"] if size else [])
    if filters:
        cmd += ["-vf", ",".join(filters)]
    cmd += ["-an", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    count = 0
    try:
        while True:
            data = proc.stdout.read(frame_bytes * batch)
            n = len(data) // frame_bytes
            if n:
                count += n
                yield np.frombuffer(data, np.uint8, n * frame_bytes).reshape(n, height, width, 3).copy()
            if len(data) < frame_bytes * batch:
                break
        if proc.wait() != 0:
            reason = proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise VideoError(f"video {path} is unreadable ({reason[-1] if reason else 'ffmpeg failed'})")
        if count == 0:
            raise VideoError(f"video {path} has no video frames")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


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


def write_video(
    path: str | os.PathLike, frames: np.ndarray, fps: float = 25.0, audio: str | os.PathLike | None = None
) -> Path:
    """(T, H, W, 3) uint8 frames (+ optional audio file) -> H.264 mp4 in one ffmpeg run; for fixtures and demos."""
    path = Path(path)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    t, h, w, _ = frames.shape
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"]
    cmd += ["-s", f"{w}x{h}", "-r", str(fps), "-i", "-"]
    if audio is not None:
        cmd += ["-i", str(audio), "-c:a", "aac"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", str(path)]
    proc = subprocess.run(cmd, input=frames.tobytes(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise VideoError(f"could not write {path}: {proc.stderr.decode(errors='replace').strip()}")
    return path
