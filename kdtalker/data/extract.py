"""Offline extraction: a folder of clips -> one shard per clip (a renderer's motion + Wav2Lip audio features).

Each job (torchrun rank or job-array index) takes its share of the sorted clip list, decodes ahead on threads,
batches the motion extractor across clips, writes shards atomically and appends one index line per finished clip.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from kdtalker.data.clip_index import IndexWriter, index_path, read_index, speaker_and_video
from kdtalker.data.jobs import job_share
from kdtalker.data.layouts import motion_keys
from kdtalker.data.shards import Clip, read_shard, write_shard
from kdtalker.errors import KDTalkerError, OutputError
from kdtalker.fileio import describe_os_error
from kdtalker.media import read_video
from kdtalker.motion_layout import MotionLayout

# frames (B, 256, 256, 3) uint8 -> {key: (B, *motion_keys(layout)[key])}, the renderer's motion
MotionFn = Callable[[np.ndarray], dict[str, np.ndarray]]
# wav (N,) float32 16 kHz -> (Ta, 512)
AudioFn = Callable[[np.ndarray], np.ndarray]
LoadAudioFn = Callable[[Path], np.ndarray]
# frames (T, H, W, 3) uint8 RGB at 25 fps + wav (N,) float32 16 kHz -> (SyncNet offset in frames, confidence)
SyncFn = Callable[[np.ndarray, np.ndarray], tuple[int, float]]

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


def _shard_state(target: Path, record: dict | None) -> str:
    """'done' (indexed and of the indexed size: a stat, not a read), 'damaged' (indexed, other size) or 'todo'."""
    if record is None:
        return "todo"  # also a shard renamed into place whose index line a kill prevented: redone, cheap and rare
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        return "todo"
    return "done" if size == record.get("bytes") else "damaged"


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
        target.parent.mkdir(parents=True, exist_ok=True)
        write_shard(target, clip)
    except OSError as exc:
        raise OutputError(
            f"cannot write the shard {target}: {describe_os_error(exc)}; extraction stopped "
            "(finished shards are kept; run again to continue)"
        ) from None
    except OutputError as exc:
        raise OutputError(f"{exc}; extraction stopped (finished shards are kept; run again to continue)") from None


def clip_name(path: Path, root: Path) -> str:
    """Shard name for a clip: its path under `root` without suffix, '/'-separated (VoxCeleb ids repeat stems)."""
    return path.relative_to(root).with_suffix("").as_posix()


def find_clips(root: str | os.PathLike, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[Path]:
    """All video files under `root` (recursive), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise KDTalkerError(f"video folder {root} does not exist")
    exts = {e.lower() for e in extensions}
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."))


def motion_from_frames(
    frames: np.ndarray, motion_fn: MotionFn, batch_size: int, layout: MotionLayout
) -> dict[str, np.ndarray]:
    """(T, 256, 256, 3) uint8 -> per-frame motion {key: (T, ...)} in `layout`, float32, `batch_size` frames a batch."""
    keys = motion_keys(layout)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for start in range(0, len(frames), batch_size):
        info = motion_fn(frames[start : start + batch_size])
        for key, trailing in keys.items():
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
    *,
    layout: MotionLayout,
) -> Clip:
    """One video -> Clip in `layout`; KDTalkerError (unreadable, no audio, shorter than `min_frames` aligned frames)."""
    wav = load_audio(video)  # first: a clip without a sound track fails before the slow motion pass
    aud_feat = np.asarray(audio_fn(wav), np.float32)
    frames = read_video(video, fps=fps, size=size)
    _check_length(len(frames), len(aud_feat), min_frames)
    return Clip(motion_from_frames(frames, motion_fn, batch_size, layout), aud_feat, fps, layout)


def _check_length(frames: int, audio_frames: int, min_frames: int) -> None:
    """KDTalkerError when the clip gives fewer than `min_frames` aligned frames."""
    aligned = min(frames - 1, audio_frames - 2)
    if aligned < min_frames:
        raise KDTalkerError(
            f"too short: {frames} video / {audio_frames} audio frames give {aligned} aligned frames, need {min_frames}"
        )


@dataclass
class _Job:
    """One clip on its way through extraction: decoded, then its frames batched with other clips' frames."""

    video: Path
    name: str
    frames: np.ndarray | None = None  # (T, size, size, 3) uint8 until the motion pass has used them
    wav: np.ndarray | None = None
    error: BaseException | None = None  # what decoding raised, judged in the main thread
    aud_feat: np.ndarray | None = None
    sync: tuple[int, float] | None = None
    num_frames: int = 0
    done: int = 0  # frames through the motion extractor
    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)  # motion key -> per-batch pieces


def _decode(job: _Job, load_audio: LoadAudioFn, fps: float, size: int) -> _Job:
    """Sound track then frames (a clip without sound fails before the slow decode); errors travel with the job."""
    try:
        job.wav = load_audio(job.video)
        job.frames = read_video(job.video, fps=fps, size=size)
        job.num_frames = len(job.frames)
    except Exception as exc:  # judged (skip or stop) in the main thread, in clip order
        job.error = exc
    return job


def _decoded(jobs: list[_Job], load_audio: LoadAudioFn, fps: float, size: int, workers: int) -> Iterator[_Job]:
    """Jobs decoded, in order; with `workers` > 0 decoding runs that many clips ahead on threads (ffmpeg and
    audio resampling release the GIL) while the main thread runs the networks."""
    if workers <= 0:
        for job in jobs:
            yield _decode(job, load_audio, fps, size)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        ahead: deque[Future] = deque()
        queue = iter(jobs)
        try:
            for job in queue:
                ahead.append(pool.submit(_decode, job, load_audio, fps, size))
                if len(ahead) > 2 * workers:  # bounded: decoded frames wait in memory
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()


class _FrameBatcher:
    """Runs the motion extractor on full batches of `batch_size` frames drawn from consecutive clips (short clips
    share a batch); hands clips back, in order, once all their frames are through."""

    def __init__(self, motion_fn: MotionFn, batch_size: int, layout: MotionLayout) -> None:
        self.motion_fn, self.batch_size = motion_fn, batch_size
        self.keys = motion_keys(layout)
        self.jobs: deque[_Job] = deque()
        self.queued = 0  # frames waiting

    def add(self, job: _Job) -> list[_Job]:
        """Queue a decoded clip -> the clips finished by the full batches this made possible."""
        self.jobs.append(job)
        self.queued += job.num_frames
        finished = []
        while self.queued >= self.batch_size:
            finished += self._run(self.batch_size)
        return finished

    def flush(self) -> list[_Job]:
        """Run what is left (a last, smaller batch) -> the remaining clips."""
        finished = []
        while self.queued:
            finished += self._run(min(self.queued, self.batch_size))
        return finished

    def _run(self, count: int) -> list[_Job]:
        pieces, take = [], count
        for job in self.jobs:
            if not take:
                break
            n = min(take, job.num_frames - job.done)  # each waiting clip appears once per batch
            if n > 0:
                pieces.append((job, job.done, n))
                take -= n
        batch = np.concatenate([job.frames[start : start + n] for job, start, n in pieces])
        info = self.motion_fn(batch)
        at = 0
        for job, _, n in pieces:
            for key, trailing in self.keys.items():
                job.parts.setdefault(key, []).append(
                    np.asarray(info[key][at : at + n], np.float32).reshape(n, *trailing)
                )
            job.done += n
            at += n
        self.queued -= count
        finished = []
        while self.jobs and self.jobs[0].done == self.jobs[0].num_frames:
            job = self.jobs.popleft()
            job.frames = None  # the decoded frames are the bulk of the memory held
            finished.append(job)
        return finished


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
    sync_fn: SyncFn | None = None,
    shard: int = 0,
    num_shards: int = 1,
    decode_workers: int = 0,
    *,
    layout: MotionLayout,
) -> ExtractionReport:
    """This job's share of the clips under `video_dir` -> `out_dir/<relative path>.npz` + index lines; resumable.

    `motion_fn` gives the motion of `layout` (LivePortrait's or Face-vid2vid's); each shard records the layout.
    Clips recorded in the index (any job's) with their shard of the recorded size are skipped; `sync_fn` (None:
    no SyncNet weights) scores each clip's audio-visual offset and confidence for data.select.
    """
    video_dir, out_dir = Path(video_dir), Path(out_dir)
    clips = find_clips(video_dir)
    if not clips:
        raise KDTalkerError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {video_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    index = read_index(out_dir)
    other = next((r for r in index.values() if r.get("layout", "liveportrait") != layout.name), None)
    if other is not None:  # shards of two renderers in one folder could not be normalised or trained together
        raise OutputError(
            f"out={out_dir} holds {other.get('layout', 'liveportrait')} shards ({other['clip']}, ...); extract "
            f"{layout.name} motion into a folder of its own"
        )
    report = ExtractionReport()
    todo = []
    for video in job_share(clips, shard, num_shards, group=lambda path: path.parent):
        name = clip_name(video, video_dir)
        target = out_dir / f"{name}.npz"
        state = "todo" if overwrite else _shard_state(target, index.get(name))
        if state == "done":
            report.already_done.append(name)
            continue
        if state == "damaged":
            log(f"redo {video}: its shard {target} is truncated or damaged")
        todo.append(_Job(video, name))

    bar = tqdm(total=len(todo), desc=f"extract {shard + 1}/{num_shards}" if num_shards > 1 else "extract", unit="clip")
    batcher = _FrameBatcher(motion_fn, batch_size, layout)

    def skip(job: _Job, reason: str, what: str = "") -> None:
        report.skipped[job.name] = reason
        log(f"skip {job.video}: {what}{reason}")
        bar.update(1)

    def finish(job: _Job) -> None:
        motion = {k: np.concatenate(v, 0) for k, v in job.parts.items()}
        target = out_dir / f"{job.name}.npz"
        try:
            _write(target, Clip(motion, job.aud_feat, fps, layout))
        except OutputError:
            raise
        except KDTalkerError as exc:  # the clip's own values (NaN motion, ...) are unusable
            return skip(job, str(exc))
        speaker, video = speaker_and_video(job.name)
        writer.append(
            {
                "clip": job.name,
                "layout": layout.name,
                "speaker": speaker,
                "video": video,
                "frames": job.num_frames,
                "audio_frames": int(job.aud_feat.shape[0]),
                "aligned": min(job.num_frames - 1, int(job.aud_feat.shape[0]) - 2),
                "bytes": target.stat().st_size,
                "sync_offset": None if job.sync is None else int(job.sync[0]),
                "sync_conf": None if job.sync is None else float(job.sync[1]),
            }
        )
        report.written.append(job.name)
        bar.update(1)

    with IndexWriter(index_path(out_dir, shard, num_shards)) as writer, bar, torch.inference_mode():
        for job in _decoded(todo, load_audio, fps, size, decode_workers):
            try:
                if job.error is not None:
                    raise job.error
                job.aud_feat = np.asarray(audio_fn(job.wav), np.float32)
                _check_length(job.num_frames, len(job.aud_feat), min_frames)
                if sync_fn is not None:
                    job.sync = sync_fn(job.frames, job.wav)
            except OSError as exc:
                if exc.errno in FATAL_ERRNOS:
                    raise OutputError(f"extraction stopped at {job.video}: {describe_os_error(exc)}") from None
                skip(job, f"unreadable video ({describe_os_error(exc)})")
                continue
            except KDTalkerError as exc:
                skip(job, str(exc))
                continue
            except Exception as exc:  # a broken file can trip a decoder in unforeseen ways; the rest must go on
                skip(job, f"{type(exc).__name__}: {exc}", "unexpected error ")
                continue
            job.wav = None
            for done in batcher.add(job):
                finish(done)
        for done in batcher.flush():
            finish(done)
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
