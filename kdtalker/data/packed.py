"""A packed training set: every clip's aligned frames in three flat float32 files read through np.memmap, plus a
small index, so a training process maps the data instead of loading it (its memory does not grow with the clips).

Folder layout (written by `pack_shards`, scripts/pack.py):

| file | contents |
| --- | --- |
| ``motion.f32`` | (F, 70) raw motion [scale, yaw, pitch, roll, t, exp] (not normalised: the norm file may change) |
| ``kp.f32`` | (F, 63) raw canonical keypoints |
| ``audio.f32`` | (F, 512) audio features |
| ``clips.npz`` | per clip: name, start, length (N = min(T - 1, Ta - 2)), speaker, video, sync_offset, sync_conf |
| ``pack.json`` | format, clip and frame counts, source shard folder; written last (no pack.json: unfinished) |

Clip i is rows start[i] .. start[i] + length[i] of each file, in shard-name order; sync_* are NaN where not scored.
LivePortrait motion only: Face-vid2vid shards (51-d) are refused with one error and train from their folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from kdtalker.data.clip_index import read_index, speaker_and_video
from kdtalker.data.shards import AUDIO_DIM, read_shard, shard_paths
from kdtalker.diffusion.motion import pack_motion
from kdtalker.errors import KDTalkerError, OutputError

PACK_MARK = "pack.json"
PACK_FORMAT = "kdtalker-packed-v1"
ARRAYS = {"motion": 70, "kp": 63, "audio": AUDIO_DIM}  # file stem -> columns (float32 rows)
INDEX_KEYS = ("name", "start", "length", "speaker", "video", "sync_offset", "sync_conf")


def is_packed(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a finished pack; KDTalkerError for one a killed run left unfinished."""
    folder = Path(folder)
    if (folder / PACK_MARK).is_file():
        return True
    if (folder / "clips.npz").is_file() or (folder / "motion.f32").is_file():
        raise KDTalkerError(f"{folder} holds an unfinished pack (no {PACK_MARK}); run scripts/pack.py again")
    return False


def _aligned_rows(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shard -> raw (N, 70) motion, (N, 63) kp, (N, 512) audio over the official aligned length N."""
    clip = read_shard(path)
    if clip.layout.name != "liveportrait":
        raise KDTalkerError(
            f"shard {path} holds {clip.layout.name} motion ({clip.layout.dim}-d); a pack holds LivePortrait motion "
            f"only: train {clip.layout.name} shards from their folder (data.train_dir=<the shard folder>)"
        )
    n = clip.num_aligned
    f = {k: v[:n] for k, v in clip.motion.items()}
    motion = pack_motion(scale=f["scale"], yaw=f["yaw"], pitch=f["pitch"], roll=f["roll"], t=f["t"], exp=f["exp"])
    return np.asarray(motion, np.float32), f["kp"].reshape(n, 63), clip.aud_feat[:n]


def _remove_dead_runs(out_dir: Path) -> None:
    """Temporary folders of killed pack runs (their pid is gone) are removed."""
    for folder in out_dir.glob(".packing.*"):
        pid = folder.name.rsplit(".", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


def pack_shards(
    shard_dir: str | os.PathLike, out_dir: str | os.PathLike, log: Callable[[str], None] = tqdm.write
) -> Path:
    """Shard folder (with its extraction index, if any) -> packed folder `out_dir`; streams one clip at a time.

    The files are written into a hidden temporary folder inside `out_dir` and moved into place at the end,
    pack.json last; an existing pack is replaced only then. `out_dir` must not be (inside) the shard folder.
    """
    shard_dir, out_dir = Path(shard_dir), Path(out_dir)
    paths = shard_paths(shard_dir)
    if not paths:
        raise KDTalkerError(f"no shards (.npz/.mat) under {shard_dir}; run scripts/extract.py first")
    if out_dir.resolve() == shard_dir.resolve() or shard_dir.resolve() in out_dir.resolve().parents:
        raise OutputError(f"out={out_dir} is inside the shard folder {shard_dir}; write the pack next to it")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"out={out_dir} is a file; give a folder for the pack")
    index = read_index(shard_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_dead_runs(out_dir)
    tmp = out_dir / f".packing.{os.getpid()}"
    tmp.mkdir()
    try:
        columns: dict[str, list] = {k: [] for k in INDEX_KEYS}
        start = 0
        handles = {k: open(tmp / f"{k}.f32", "wb") for k in ARRAYS}
        try:
            for path in tqdm(paths, desc="pack", unit="clip"):
                name = path.relative_to(shard_dir).with_suffix("").as_posix()
                rows = _aligned_rows(path)
                if len(rows[0]) < 2:  # no window at all: no reference frame and one target frame
                    log(f"skip {path}: {len(rows[0])} aligned frames")
                    continue
                for key, arr in zip(ARRAYS, rows):
                    handles[key].write(np.ascontiguousarray(arr, np.float32).tobytes())
                record = index.get(name, {})
                speaker, video = speaker_and_video(name)
                offset, conf = record.get("sync_offset"), record.get("sync_conf")
                columns["name"].append(name)
                columns["start"].append(start)
                columns["length"].append(len(rows[0]))
                columns["speaker"].append(record.get("speaker") or speaker or "")
                columns["video"].append(record.get("video") or video or "")
                columns["sync_offset"].append(np.nan if offset is None else float(offset))
                columns["sync_conf"].append(np.nan if conf is None else float(conf))
                start += len(rows[0])
        finally:
            for fh in handles.values():
                fh.close()
        if not columns["name"]:
            raise KDTalkerError(f"none of the {len(paths)} shards under {shard_dir} has 2 aligned frames")
        arrays = {
            "name": np.asarray(columns["name"], dtype=str),
            "start": np.asarray(columns["start"], np.int64),
            "length": np.asarray(columns["length"], np.int64),
            "speaker": np.asarray(columns["speaker"], dtype=str),
            "video": np.asarray(columns["video"], dtype=str),
            "sync_offset": np.asarray(columns["sync_offset"], np.float32),
            "sync_conf": np.asarray(columns["sync_conf"], np.float32),
        }
        with open(tmp / "clips.npz", "wb") as fh:
            np.savez(fh, **arrays)
        meta = {"format": PACK_FORMAT, "clips": len(arrays["name"]), "frames": start, "source": str(shard_dir)}
        (tmp / PACK_MARK).write_text(json.dumps(meta, indent=1))
        (out_dir / PACK_MARK).unlink(missing_ok=True)  # the old pack is unfinished from here on
        for name in [*(f"{k}.f32" for k in ARRAYS), "clips.npz", PACK_MARK]:
            os.replace(tmp / name, out_dir / name)
    except BaseException:
        if created:  # a failed first pack leaves nothing behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


class PackedClips:
    """A packed folder opened for reading: the index in memory (a few arrays), the frames mapped per read.

    `subset(indices)` views a selection of its clips (data.select) without touching the frames.
    """

    def __init__(self, folder: str | os.PathLike, indices: np.ndarray | None = None) -> None:
        self.folder = Path(folder)
        try:
            meta = json.loads((self.folder / PACK_MARK).read_text())
            with np.load(self.folder / "clips.npz", allow_pickle=False) as data:
                self.index = {k: data[k] for k in INDEX_KEYS}
        except (OSError, ValueError, KeyError) as exc:
            raise KDTalkerError(f"packed data {self.folder} is unreadable ({exc}); run scripts/pack.py again") from exc
        if meta.get("format") != PACK_FORMAT:
            raise KDTalkerError(f"{self.folder / PACK_MARK} is not a {PACK_FORMAT} pack; run scripts/pack.py again")
        self.frames = int(meta["frames"])
        for key, cols in ARRAYS.items():
            size = (self.folder / f"{key}.f32").stat().st_size if (self.folder / f"{key}.f32").is_file() else -1
            if size != self.frames * cols * 4:
                raise KDTalkerError(
                    f"{self.folder / (key + '.f32')} is missing or cut short; run scripts/pack.py again"
                )
        self.indices = np.arange(len(self.index["name"])) if indices is None else np.asarray(indices, np.int64)

    def subset(self, indices: np.ndarray) -> "PackedClips":
        """The clips at `indices` (positions in this view)."""
        view = object.__new__(PackedClips)
        view.__dict__.update(self.__dict__)
        view.indices = self.indices[np.asarray(indices, np.int64)]
        return view

    def __len__(self) -> int:
        return len(self.indices)

    def column(self, key: str) -> np.ndarray:
        """One index column (INDEX_KEYS) over this view's clips, (C,)."""
        return self.index[key][self.indices]

    def rows(self, clip: int, first: int, count: int) -> dict[str, np.ndarray]:
        """Rows first .. first + count of clip `clip` (position in this view) -> {motion, kp, audio} plain arrays."""
        at = int(self.index["start"][self.indices[clip]]) + first
        out = {}
        for key, cols in ARRAYS.items():
            # Mapped for this read only (nanoGPT's way): a long-lived map would keep every page read counted in the
            # process's memory; this one maps just the rows asked for and is gone once they are copied.
            rows = np.memmap(self.folder / f"{key}.f32", np.float32, "r", offset=at * cols * 4, shape=(count, cols))
            out[key] = np.array(rows)
            del rows
        return out
