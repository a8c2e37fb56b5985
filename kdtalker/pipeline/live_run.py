"""A live session fed from outside (scripts/live.py): speech from a file at the speed it plays, or raw PCM on stdin;
frames to an mp4 with the speech muxed, motion to an .npz.

The frames go to ffmpeg as they come (a video-only mp4 in a private temporary folder) and the samples to a wav
beside it; at the end one more ffmpeg run copies the video stream and adds the speech as AAC into the output,
written atomically (the sound cannot go into the first run: ffmpeg opens its inputs before the speech exists).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np
import soundfile as sf
import torch

from kdtalker.audio import SAMPLE_RATE, load_audio
from kdtalker.errors import AudioError, ConfigError, VideoError
from kdtalker.fileio import atomic_path, temp_dir
from kdtalker.media import ffmpeg_exe
from kdtalker.pipeline.live import LivePiece, LiveSession
from kdtalker.pipeline.video import VideoWriter

PCM_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}  # raw mono 16 kHz PCM on stdin


def file_chunks(path: str | os.PathLike, chunk_samples: int, realtime: bool) -> Iterator[np.ndarray]:
    """A speech file as 16 kHz float32 chunks of `chunk_samples`; with `realtime`, each comes when it has been
    spoken (its last sample's time since the first chunk), as a microphone would hand it over."""
    wav = load_audio(path, SAMPLE_RATE, fps=None)
    start = time.monotonic()
    for first in range(0, len(wav), chunk_samples):
        chunk = wav[first : first + chunk_samples]
        if realtime:
            wait = start + (first + len(chunk)) / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        yield chunk


def pcm_chunks(stream: BinaryIO, fmt: str, chunk_samples: int) -> Iterator[np.ndarray]:
    """Raw mono 16 kHz PCM (`fmt` s16le | f32le) from a binary stream -> float32 chunks of whatever has arrived, up
    to `chunk_samples` (int16 / 32768, as soundfile reads PCM_16); AudioError when it ends inside a sample."""
    if fmt not in PCM_FORMATS:
        raise ConfigError(f"stdin_format={fmt!r} is not one of {tuple(PCM_FORMATS)}")
    dtype = PCM_FORMATS[fmt]
    read = getattr(stream, "read1", stream.read)  # read1: what has arrived, without waiting for a full chunk
    rest = b""
    while True:
        data = read(chunk_samples * dtype.itemsize)
        if not data:
            break
        data = rest + data
        whole = len(data) // dtype.itemsize * dtype.itemsize
        rest = data[whole:]
        samples = np.frombuffer(data[:whole], dtype=dtype)
        if dtype.kind == "i":
            yield samples.astype(np.float32) / 32768.0
        else:
            yield samples.astype(np.float32)
    if rest:
        raise AudioError(f"the {fmt} PCM on stdin ended inside a sample ({len(rest)} byte(s) left over)")


@dataclass
class LiveRun:
    """What a run did: frames out, audio seconds in, and when each frame came out after its audio (seconds)."""

    frames: int = 0
    audio_seconds: float = 0.0
    delays: list[float] = field(default_factory=list)  # per frame: wall time out - wall time its audio was in


def run_live(
    session: LiveSession,
    chunks: Iterable[np.ndarray],
    out: str | os.PathLike | None,
    motion_out: str | os.PathLike | None,
    crf: int,
    on_piece: Callable[[LivePiece], None] | None = None,
) -> LiveRun:
    """Push every chunk into the session; frames to `out` (.mp4, the speech muxed) when it renders, the motion to
    `motion_out` (.npz: motion (T, 70), times (T,)) when given. Nothing is left half-written on any failure."""
    report = LiveRun()
    motions: list[torch.Tensor] = []
    fps = session.fps
    with temp_dir("kdtalker_live_") as folder:
        writer = None
        if session.renders:
            width, height = session.size
            writer = VideoWriter(folder / "video.mp4", width, height, fps, crf=crf)
        sound = sf.SoundFile(folder / "speech.wav", "w", SAMPLE_RATE, 1, "FLOAT")
        start = time.monotonic()
        pushed = 0

        def take(pieces: list[LivePiece]) -> None:
            now = time.monotonic() - start
            for piece in pieces:
                if writer is not None:
                    writer.write(piece.frames)
                motions.append(piece.motion)
                report.delays.extend(now - (piece.times + 1.0 / fps))  # its own audio ends at (i + 1) / fps
                if on_piece is not None:
                    on_piece(piece)

        try:
            with session:
                for chunk in chunks:
                    pieces = session.push(chunk)  # checks the chunk before anything else is written
                    sound.write(chunk)
                    pushed += len(chunk)
                    take(pieces)
                take(session.close())
            sound.close()
            report.frames = sum(len(m) for m in motions)
            report.audio_seconds = pushed / SAMPLE_RATE
            if report.frames == 0:
                raise AudioError(
                    f"the speech was {pushed} samples ({pushed / SAMPLE_RATE * 1000:.1f} ms), shorter than one "
                    f"video frame at {fps:g} fps: nothing to write"
                )
            if writer is not None:
                writer.close()
                writer = None
                mux_speech(folder / "video.mp4", folder / "speech.wav", Path(out), report.frames / fps)
            if motion_out is not None:
                motion = torch.cat(motions).numpy()
                with atomic_path(motion_out, "the motion file") as tmp, open(tmp, "wb") as f:
                    np.savez(f, motion=motion, times=np.arange(len(motion), dtype=np.float64) / fps)
        finally:
            if writer is not None:
                writer.abort()
            if not sound.closed:
                sound.close()
    return report


def mux_speech(video: Path, speech: Path, out: Path, duration: float) -> Path:
    """Video-only mp4 + speech wav -> `out` (the video stream copied, the speech as AAC, cut to `duration`)."""
    with atomic_path(out, "the video") as tmp:
        cmd = [ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error", "-i", str(video), "-i", str(speech)]
        cmd += ["-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", "192k"]
        cmd += ["-t", f"{duration:.6f}", "-movflags", "+faststart", "-f", "mp4", str(tmp)]
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
        if done.returncode != 0:
            text = done.stderr.strip()[-2000:] or "no message"
            raise VideoError(f"ffmpeg failed adding the speech to {out} (exit {done.returncode}): {text}")
    return out
