"""Training windows, the official recipe: ref frame r, ori = (0*7, kp[r]), x0 = motion[r+1..r+64], audio alike.

The motion is in the shards' layout (LivePortrait's 70-d, Face-vid2vid's 51-d: ori = (0*6, kp[r]) there), which
must be the statistics' (`norm.parts`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from kdtalker.data.packed import ARRAYS as PACKED_ARRAYS
from kdtalker.data.packed import PackedClips
from kdtalker.data.shards import Clip, read_shard
from kdtalker.errors import KDTalkerError


@dataclass
class NormalisedClip:
    """One clip aligned (length N = min(T-1, Ta-2)) and normalised."""

    name: str
    motion: np.ndarray  # (N, D) normalised, in the layout's order (D = 70: [scale, yaw, pitch, roll, t, exp])
    kp: np.ndarray  # (N, K) normalised canonical keypoints (K = 63; Face-vid2vid: 45)
    audio: np.ndarray  # (N, 512) audio features

    def canonical(self, r: int) -> np.ndarray:
        """The 'ori' token of frame r, (D,): zeros for the pose channels, then the normalised keypoints."""
        return canonical_token(self.kp[r], self.motion.shape[1])

    def window(self, r: int, length: int) -> dict[str, torch.Tensor]:
        """Reference index r -> dict(x0 (L,D), ref (D,), ori (D,), audio (L,512)) float32 tensors."""
        ori = self.canonical(r)
        return {
            "x0": torch.from_numpy(np.ascontiguousarray(self.motion[r + 1 : r + 1 + length])),
            "ref": torch.from_numpy(self.motion[r].copy()),
            "ori": torch.from_numpy(ori),
            "audio": torch.from_numpy(np.ascontiguousarray(self.audio[r + 1 : r + 1 + length])),
        }


def canonical_token(kp: np.ndarray, dim: int) -> np.ndarray:
    """Normalised canonical keypoints (K,) -> the 'ori' token (dim,): dim - K zeros (pose channels), then kp."""
    return np.concatenate([np.zeros(dim - kp.shape[-1], np.float32), kp])


def normalise_clip(clip: Clip, norm, name: str = "") -> NormalisedClip:
    """Raw Clip -> NormalisedClip with the official truncation min(T - 1, Ta - 2), in the clip's layout."""
    n = clip.num_aligned
    f = {k: v[:n] for k, v in clip.motion.items()}
    raw = clip.layout.pack(**{name: f[name] for name, _ in clip.layout.parts})
    motion = np.asarray(norm.normalize(raw), np.float32)
    kp = np.asarray(norm.normalize_kp(f["kp"].reshape(n, clip.layout.kp_dim)), np.float32)
    return NormalisedClip(name, motion, kp, clip.aud_feat[:n].copy())


class MotionWindows(Dataset):
    """Random `window`-frame training windows over clips; deterministic given (seed, epoch, index).

    `source`: shard paths (read and normalised into memory up front) or a PackedClips (memory-mapped, each window
    read and normalised when asked for: the same tensors, bit for bit, with memory that does not grow with the
    clips). Train mode draws r uniformly from [0, N-1-window] anew each epoch; the epoch is set_epoch's, or comes
    with the index as (epoch, index) (what a sampler feeding persistent DataLoader workers passes, as their copies
    of the dataset never see set_epoch). Eval mode fixes r per index, so the validation loss is comparable across
    steps. `samples_per_clip` repeats every clip within an epoch (1 = the official one window per clip per epoch).
    """

    def __init__(
        self,
        source: Sequence[str | os.PathLike] | PackedClips,
        norm,
        window: int = 64,
        samples_per_clip: int = 1,
        seed: int = 0,
        train: bool = True,
        log: Callable[[str], None] = tqdm.write,
    ) -> None:
        self.window, self.samples_per_clip, self.seed, self.train = window, samples_per_clip, seed, train
        self.norm = norm
        self.epoch = 0
        self.packed: PackedClips | None = None
        self._loaded: list[NormalisedClip] = []
        if isinstance(source, PackedClips):
            if norm.dim != PACKED_ARRAYS["motion"]:
                raise KDTalkerError(
                    f"the packed set {source.folder} holds {PACKED_ARRAYS['motion']}-d LivePortrait motion, the "
                    f"normalisation statistics are for {norm.dim}-d motion (data.layout, data.norm)"
                )
            lengths = source.column("length")
            usable = np.flatnonzero(lengths >= window + 1)
            if len(usable) < len(lengths):
                log(
                    f"skip {len(lengths) - len(usable)} packed clips: a {window}-frame window needs {window + 1} frames"
                )
            self.packed, self.lengths = source.subset(usable), lengths[usable]
            total = len(lengths)
        else:
            for path in tqdm(list(source), desc="load shards", unit="clip", leave=False):
                clip = read_shard(path)
                if clip.layout.parts != tuple(norm.parts):
                    raise KDTalkerError(
                        f"shard {path} holds {clip.layout.name} motion ({clip.layout.dim}-d), but the normalisation "
                        f"statistics are for {norm.dim}-d motion; a run reads one renderer's shards, with their own "
                        "statistics (data.layout, data.norm)"
                    )
                if clip.num_aligned < window + 1:
                    log(f"skip {path}: {clip.num_aligned} aligned frames, a {window}-frame window needs {window + 1}")
                    continue
                self._loaded.append(normalise_clip(clip, norm, Path(path).stem))
            self.lengths = np.asarray([len(c.motion) for c in self._loaded], np.int64)
            total = len(source)
        if not len(self.lengths):
            raise KDTalkerError(
                f"no usable clips (each needs at least {window + 1} aligned frames) among {total} shards"
            )

    @property
    def clips(self) -> Sequence[NormalisedClip]:
        """The clips as NormalisedClip (a packed set builds each one when indexed)."""
        return _PackedClipList(self) if self.packed is not None else self._loaded

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose windows __getitem__ returns (train mode)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths) * self.samples_per_clip

    def ref_index(self, index: int, epoch: int | None = None) -> int:
        """Reference frame r for `index` in `epoch` (default: the current one)."""
        length = int(self.lengths[index % len(self.lengths)])
        key = [self.seed, self.epoch if epoch is None else epoch, index] if self.train else [self.seed, index]
        return int(np.random.default_rng(key).integers(0, length - 1 - self.window, endpoint=True))

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = index if isinstance(index, tuple) else (None, index)
        clip, r = index % len(self.lengths), self.ref_index(index, epoch)
        if self.packed is None:
            return self._loaded[clip].window(r, self.window)
        # Normalising the window's rows is normalising the clip and cutting the window (elementwise float32 ops).
        rows = self.packed.rows(clip, r, self.window + 1)
        motion = np.asarray(self.norm.normalize(rows["motion"]), np.float32)
        kp = np.asarray(self.norm.normalize_kp(rows["kp"][0]), np.float32)
        return {
            "x0": torch.from_numpy(np.ascontiguousarray(motion[1:])),
            "ref": torch.from_numpy(motion[0].copy()),
            "ori": torch.from_numpy(canonical_token(kp, motion.shape[1])),
            "audio": torch.from_numpy(np.ascontiguousarray(rows["audio"][1:])),
        }


class _PackedClipList(Sequence):
    """A packed MotionWindows' clips as NormalisedClip, read when indexed (validation samples a few of them)."""

    def __init__(self, windows: MotionWindows) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows.lengths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        packed, norm = self.windows.packed, self.windows.norm
        rows = packed.rows(i, 0, int(self.windows.lengths[i]))
        return NormalisedClip(
            str(packed.column("name")[i]),
            np.asarray(norm.normalize(rows["motion"]), np.float32),
            np.asarray(norm.normalize_kp(rows["kp"]), np.float32),
            rows["audio"],
        )
