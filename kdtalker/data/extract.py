"""Offline extraction: a folder of clips -> one shard per clip (LivePortrait motion + Wav2Lip audio features)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from kdtalker.data.shards import MOTION_KEYS, Clip, read_shard, write_shard
from kdtalker.errors import KDTalkerError, OutputError
from kdtalker.fileio import describe_os_error
from kdtalker.media import read_video

# frames (B, 256, 256, 3) uint8 -> {key: (B, *MOTION_KEYS[key])}
MotionFn = Callable[[np.ndarray], dict[str, np.ndarray]]
# wav (N,) float32 16 kHz -> (Ta, 512)
AudioFn = Callable[[np.ndarray], np.ndarray]
LoadAudioFn = Callable[[Path], np.ndarray]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# Errors of the machine, not of a clip: every later clip would fail the same way, so the run stops.
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EMFILE, errno.ENFILE}


@dataclass
class ExtractionReport:
    """What one extraction run did: written shards, clips already done, clips it could not use."""

    written: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # clip name -> reason

    def summary(self) -> str:
        """One line for the end of a run."""
        return (
            f"{len(self.written)} clips extracted, {len(self.already_done)} already done, {len(self.skipped)} skipped"
        )

    def check_any_usable(self) -> "ExtractionReport":
        """KDTalkerError when clips were found but none could be used: the same failure for all is no success."""
        if self.skipped and not self.written and not self.already_done:
            name, reason = next(iter(self.skipped.items()))
            raise KDTalkerError(
                f"none of the {len(self.skipped)} clips could be used ({self.summary()}); the first, {name}: {reason}"
            )
        return self


def shard_is_complete(path: Path) -> bool:
    """Whether an existing shard reads back whole (a truncated or damaged one is redone)."""
    try:
        read_shard(path)
    except KDTalkerError:
        return False
    return True


def _write(target: Path, clip: Clip) -> None:
    """write_shard; an OS-level failure (disk full, permission) stops the whole run with one message."""
    try:
        write_shard(target, clip)
    except OSError as exc:
        raise OutputError(
            f"cannot write the shard {target}: {describe_os_error(exc)}; extraction stopped "
            "(finished shards are kept; run again to continue)"
        ) from None
    except OutputError as exc:
        raise OutputError(f"{exc}; extraction stopped (finished shards are kept; run again to continue)") from None


def clip_name(path: Path, root: Path) -> str:
    """Shard name for a clip: its path under `root` without suffix, '/' -> '__' (VoxCeleb ids repeat stems)."""
    return "__".join(path.relative_to(root).with_suffix("").parts)


def find_clips(root: str | os.PathLike, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[Path]:
    """All video files under `root` (recursive), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise KDTalkerError(f"video folder {root} does not exist")
    exts = {e.lower() for e in extensions}
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."))


def motion_from_frames(frames: np.ndarray, motion_fn: MotionFn, batch_size: int = 32) -> dict[str, np.ndarray]:
    """(T, 256, 256, 3) uint8 -> per-frame motion {key: (T, ...)} float32, in batches of `batch_size` frames."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in MOTION_KEYS}
    for start in range(0, len(frames), batch_size):
        info = motion_fn(frames[start : start + batch_size])
        for key, trailing in MOTION_KEYS.items():
            parts[key].append(np.asarray(info[key], np.float32).reshape(-1, *trailing))
    return {k: np.concatenate(v, 0) for k, v in parts.items()}


def extract_clip(
    video: Path,
    motion_fn: MotionFn,
    audio_fn: AudioFn,
    load_audio: LoadAudioFn,
    fps: float = 25.0,
    size: int = 256,
    min_frames: int = 65,
    batch_size: int = 32,
) -> Clip:
    """One video -> Clip; KDTalkerError (unreadable, no audio, shorter than `min_frames` aligned frames)."""
    wav = load_audio(video)  # first: a clip without a sound track fails before the slow motion pass
    aud_feat = np.asarray(audio_fn(wav), np.float32)
    frames = read_video(video, fps=fps, size=size)
    aligned = min(len(frames) - 1, len(aud_feat) - 2)
    if aligned < min_frames:
        raise KDTalkerError(
            f"too short: {len(frames)} video / {len(aud_feat)} audio frames give {aligned} aligned frames, "
            f"need {min_frames}"
        )
    return Clip(motion_from_frames(frames, motion_fn, batch_size), aud_feat, fps)


def extract_folder(
    video_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    motion_fn: MotionFn,
    audio_fn: AudioFn,
    load_audio: LoadAudioFn,
    fps: float = 25.0,
    size: int = 256,
    min_frames: int = 65,
    batch_size: int = 32,
    overwrite: bool = False,
    log: Callable[[str], None] = tqdm.write,
) -> ExtractionReport:
    """Every clip under `video_dir` -> `out_dir/<name>.npz`; resumable (finished shards are skipped)."""
    video_dir, out_dir = Path(video_dir), Path(out_dir)
    clips = find_clips(video_dir)
    if not clips:
        raise KDTalkerError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {video_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ExtractionReport()
    for video in tqdm(clips, desc="extract", unit="clip"):
        name = clip_name(video, video_dir)
        target = out_dir / f"{name}.npz"
        if target.exists() and not overwrite:
            if shard_is_complete(target):
                report.already_done.append(name)
                continue
            log(f"redo {video}: its shard {target} is truncated or damaged")
        try:
            with torch.inference_mode():
                clip = extract_clip(video, motion_fn, audio_fn, load_audio, fps, size, min_frames, batch_size)
        except OSError as exc:
            if exc.errno in FATAL_ERRNOS:
                raise OutputError(f"extraction stopped at {video}: {describe_os_error(exc)}") from None
            report.skipped[name] = f"unreadable video ({describe_os_error(exc)})"
            log(f"skip {video}: {report.skipped[name]}")
            continue
        except KDTalkerError as exc:
            report.skipped[name] = str(exc)
            log(f"skip {video}: {exc}")
            continue
        except Exception as exc:  # a broken file can trip a decoder in unforeseen ways; the rest must go on
            report.skipped[name] = f"{type(exc).__name__}: {exc}"
            log(f"skip {video}: unexpected error {type(exc).__name__}: {exc}")
            continue
        try:
            _write(target, clip)
        except OutputError:
            raise
        except KDTalkerError as exc:  # the clip's own values (NaN motion, ...) are unusable
            report.skipped[name] = str(exc)
            log(f"skip {video}: {exc}")
            continue
        report.written.append(name)
    return report


def import_official(
    mat_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    log: Callable[[str], None] = tqdm.write,
) -> ExtractionReport:
    """Official extract_motion_dataset.py .mat files -> validated .npz shards (same arrays, float32)."""
    mat_dir, out_dir = Path(mat_dir), Path(out_dir)
    if not mat_dir.is_dir():
        raise KDTalkerError(f"folder of official .mat files {mat_dir} does not exist")
    mats = sorted(mat_dir.glob("*.mat"))
    if not mats:
        raise KDTalkerError(f"no .mat files in {mat_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ExtractionReport()
    for mat in tqdm(mats, desc="import", unit="clip"):
        target = out_dir / f"{mat.stem}.npz"
        if target.exists() and not overwrite:
            if shard_is_complete(target):
                report.already_done.append(mat.stem)
                continue
            log(f"redo {mat}: its shard {target} is truncated or damaged")
        try:
            _write(target, read_shard(mat))
        except OutputError:
            raise
        except KDTalkerError as exc:
            report.skipped[mat.stem] = str(exc)
            log(f"skip {mat}: {exc}")
            continue
        report.written.append(mat.stem)
    return report
