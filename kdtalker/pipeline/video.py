"""Streaming mp4 output through the ffmpeg binary of imageio-ffmpeg: raw RGB frames in, H.264 + AAC out."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from kdtalker.errors import VideoError
from kdtalker.fileio import temp_dir
from kdtalker.media import ffmpeg_exe


class VideoWriter:
    """Write frames as they come: (B, H, W, 3) uint8 RGB batches -> an H.264 yuv420p mp4 with the given audio.

    The sound is either a file (`audio_file`: the user's own recording, any format ffmpeg reads, kept at its own
    sample rate and channels) or a float waveform (`audio`, mono, written to a temporary wav first); it is muxed
    as AAC in the same ffmpeg run and cut to `duration` seconds (the video's length, frames / fps) when given.
    Use as a context manager; `close()` finishes the file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        fps: float = 25.0,
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        crf: int = 18,
        preset: str = "medium",
        audio_file: str | os.PathLike | None = None,
        duration: float | None = None,
    ):
        if width % 2 or height % 2:
            raise VideoError(f"H.264 with yuv420p needs even frame sizes, got {width}x{height}")
        self.path = Path(path)
        self.width, self.height, self.fps = width, height, fps
        self.num_frames = 0
        self._tmpdir = contextlib.ExitStack()  # closing it (idempotent) removes the folder
        folder = self._tmpdir.enter_context(temp_dir("kdtalker_video_"))
        self._log = open(folder / "ffmpeg.log", "w+b")
        cmd = [
            ffmpeg_exe(),
            "-y",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{width}x{height}",
            "-r",
            f"{fps}",
            "-i",
            "pipe:0",
        ]
        if audio is not None and audio_file is not None:
            raise VideoError("give the sound as a waveform or as a file, not both")
        if audio is not None:
            audio_file = folder / "audio.wav"
            sf.write(audio_file, np.clip(np.asarray(audio, np.float32), -1.0, 1.0), sample_rate, subtype="PCM_16")
        if audio_file is not None:
            cmd += ["-i", str(audio_file)]
        cmd += [
            "-map",
            "0:v:0",
            "-c:v",
            "libx264",
            "-preset",
            preset,
            "-crf",
            str(crf),
            "-pix_fmt",
            "yuv420p",
            "-r",
            f"{fps}",
        ]
        if audio_file is not None:
            cmd += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "192k"]
        if duration is not None:
            cmd += ["-t", f"{duration:.6f}"]
        cmd += ["-movflags", "+faststart", "-f", "mp4", str(self.path)]
        try:
            # Its own session: a Ctrl-C in the terminal reaches only us, and we stop ffmpeg as part of the clean-up
            # (otherwise it could die first and the interrupt would read as an ffmpeg failure).
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True
            )
        except OSError as exc:
            self._cleanup()
            raise VideoError(f"could not start ffmpeg ({exc})") from exc

    def write(self, frames: np.ndarray) -> None:
        """Append frames (B, H, W, 3) or (H, W, 3) uint8 RGB."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.shape[1:] != (self.height, self.width, 3):
            raise VideoError(
                f"frames must be uint8 (B, {self.height}, {self.width}, 3), got {frames.dtype} {frames.shape}"
            )
        try:
            self._proc.stdin.write(np.ascontiguousarray(frames).tobytes())
        except (BrokenPipeError, OSError) as exc:
            raise VideoError(f"ffmpeg stopped while writing {self.path}: {self._error_text()}") from exc
        self.num_frames += len(frames)

    def close(self) -> Path:
        """Finish encoding; VideoError when ffmpeg failed or no frame was written."""
        try:
            if self.num_frames == 0:
                self._proc.kill()
                self._proc.wait()
                raise VideoError(f"no frames were written to {self.path}")
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
            code = self._proc.wait()
            if code != 0:
                raise VideoError(f"ffmpeg failed writing {self.path} (exit {code}): {self._error_text()}")
            return self.path
        finally:
            self._cleanup()

    def abort(self) -> None:
        """Stop ffmpeg without finishing the file (the caller deletes it)."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._cleanup()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _error_text(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()[-2000:] or "no message"

    def _cleanup(self) -> None:
        if self._proc_stdin_open():
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        if not self._log.closed:
            self._log.close()
        self._tmpdir.close()

    def _proc_stdin_open(self) -> bool:
        proc = getattr(self, "_proc", None)
        return proc is not None and proc.stdin is not None and not proc.stdin.closed
