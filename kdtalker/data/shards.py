"""One clip's extracted motion + audio features on disk: read/write .npz shards, import official .mat files."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdtalker.data.layouts import layout_named, motion_keys
from kdtalker.errors import KDTalkerError
from kdtalker.fileio import atomic_path
from kdtalker.motion_layout import MotionLayout
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

# Per-frame LivePortrait motion arrays and their trailing shapes (see the package docstring); another renderer's
# shards hold motion_keys(its layout) and name it in their `layout` entry.
MOTION_KEYS: dict[str, tuple[int, ...]] = motion_keys(LIVEPORTRAIT_LAYOUT)
SHARD_KEYS = (*MOTION_KEYS, "aud_feat", "fps", "layout")
AUDIO_DIM = 512


@dataclass
class Clip:
    """Per-frame motion (raw units of the layout's renderer) and audio features of one clip."""

    motion: dict[str, np.ndarray]  # key -> (T, *motion_keys(layout)[key]) float32
    aud_feat: np.ndarray  # (Ta, 512) float32
    fps: float = 25.0
    # shards without a `layout` entry (older ones, official .mat files) are LivePortrait's
    layout: MotionLayout = LIVEPORTRAIT_LAYOUT

    @property
    def num_frames(self) -> int:
        """Number of video frames T."""
        return int(self.motion["exp"].shape[0])

    @property
    def num_aligned(self) -> int:
        """Usable aligned length, the official min(T - 1, Ta - 2)."""
        return min(self.num_frames - 1, int(self.aud_feat.shape[0]) - 2)


def _checked(
    motion: dict[str, np.ndarray], aud_feat: np.ndarray, fps: float, source: str, layout: MotionLayout
) -> Clip:
    """Validate shapes/finiteness for `layout` and cast to float32; one KDTalkerError naming the file otherwise."""
    frames = None
    out = {}
    for key, trailing in motion_keys(layout).items():
        if key not in motion:
            raise KDTalkerError(f"{source}: shard has no '{key}' array; re-extract this clip")
        arr = np.asarray(motion[key], dtype=np.float32)
        if frames is None:
            frames = arr.shape[0] if arr.ndim else 0
        try:
            arr = arr.reshape((frames, *trailing))
        except ValueError:
            raise KDTalkerError(
                f"{source}: '{key}' has shape {arr.shape}, expected ({frames}, {', '.join(map(str, trailing))}) "
                f"in the {layout.name} motion layout; re-extract this clip"
            ) from None
        out[key] = arr
    aud = np.asarray(aud_feat, dtype=np.float32)
    if aud.ndim != 2 or aud.shape[1] != AUDIO_DIM:
        raise KDTalkerError(f"{source}: 'aud_feat' has shape {aud.shape}, expected (frames, {AUDIO_DIM})")
    if not all(np.isfinite(a).all() for a in (*out.values(), aud)):
        raise KDTalkerError(f"{source}: shard holds NaN or infinite values; re-extract this clip")
    return Clip(out, aud, float(fps), layout)


def write_shard(path: str | os.PathLike, clip: Clip) -> Path:
    """Write `clip` to `path` (.npz, float32 arrays) atomically: a killed run leaves no partial shard."""
    path = Path(path)
    clip = _checked(clip.motion, clip.aud_feat, clip.fps, str(path), clip.layout)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file handle keeps np.savez from appending its own suffix
            # the layout's name as a unicode array: np.load reads it back without pickle
            np.savez(
                fh, **clip.motion, aud_feat=clip.aud_feat, fps=np.float32(clip.fps), layout=np.str_(clip.layout.name)
            )
    return path


def _starts_as_zip(path: Path) -> bool:
    """Whether the file begins as a zip archive (.npz) does; a shard cut short still does."""
    with open(path, "rb") as fh:
        return fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def read_shard(path: str | os.PathLike) -> Clip:
    """Read a .npz shard (ours) or a .mat file (the official extraction) into a Clip."""
    path = Path(path)
    if not path.is_file():
        raise KDTalkerError(f"shard {path} not found")
    if path.suffix == ".mat":
        return _read_official_mat(path)
    if not _starts_as_zip(path):  # np.load would try it as a pickle and advise allow_pickle
        raise KDTalkerError(f"{path} is not a shard (not an .npz archive); move it out of the shard folder")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise KDTalkerError(f"shard {path} is unreadable ({exc}); delete it and run the extraction again") from exc
    if "aud_feat" not in arrays:
        raise KDTalkerError(f"shard {path} has no 'aud_feat' array; re-extract this clip")
    layout = LIVEPORTRAIT_LAYOUT
    if "layout" in arrays:
        name = arrays["layout"]
        if name.dtype.kind != "U" or name.ndim != 0:
            raise KDTalkerError(f"shard {path}: its 'layout' entry is not a layout name; re-extract this clip")
        layout = layout_named(str(name), f"shard {path}")
    return _checked(arrays, arrays["aud_feat"], float(arrays.get("fps", 25.0)), str(path), layout)


def _read_official_mat(path: Path) -> Clip:
    """Official layout: yaw/pitch/roll/scale (T,1), t (T,3), exp/kp (T,21,3), aud_feat (Ta,512) via savemat."""
    from scipy.io import loadmat  # only needed for imports of official data

    try:
        data = loadmat(path)
    except Exception as exc:  # scipy raises several unrelated types for corrupt files
        raise KDTalkerError(f"official motion file {path} is unreadable ({type(exc).__name__}: {exc})") from exc
    if "aud_feat" not in data:
        raise KDTalkerError(f"{path}: no 'aud_feat' entry; is this a KDTalker extract_motion_dataset.py file?")
    motion = {k: data[k] for k in MOTION_KEYS if k in data}
    return _checked(motion, data["aud_feat"], 25.0, str(path), LIVEPORTRAIT_LAYOUT)


def shard_paths(root: str | os.PathLike, pattern: tuple[str, ...] = ("*.npz", "*.mat")) -> list[Path]:
    """Sorted shard files (.npz and official .mat) under `root`, also in sub-folders; hidden names are left out."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise KDTalkerError(f"shard folder {root} is a file, not a folder; give the folder that holds the shards")
    if not root.is_dir():
        raise KDTalkerError(f"shard folder {root} does not exist; run scripts/extract.py first")
    # recursive: shards mirror the video folder (id/video/00001.npz); flat folders of older runs read the same
    found = (p for pat in pattern for p in root.rglob(pat))
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(root).parts))


def check_layout(clip: Clip, layout: MotionLayout, path: str | os.PathLike, expected: str) -> Clip:
    """`clip` when it is in `layout`; else one KDTalkerError naming the shard, its layout and what `expected` it."""
    if clip.layout.parts != layout.parts:
        raise KDTalkerError(
            f"shard {path} holds {clip.layout.name} motion ({clip.layout.dim}-d), but {expected} "
            f"{layout.name} motion ({layout.dim}-d); one shard folder holds one renderer's motion "
            f"(extract with renderer={layout.name} into its own folder)"
        )
    return clip
