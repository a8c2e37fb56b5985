"""Training windows, the official recipe: ref frame r, ori = (0*7, kp[r]), x0 = motion[r+1..r+64], audio alike."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from kdtalker.data.shards import Clip, read_shard
from kdtalker.diffusion.motion import pack_motion
from kdtalker.errors import KDTalkerError


@dataclass
class NormalisedClip:
    """One clip aligned (length N = min(T-1, Ta-2)) and normalised."""

    name: str
    motion: np.ndarray  # (N, 70) normalised [scale, yaw, pitch, roll, t, exp]
    kp: np.ndarray  # (N, 63) normalised canonical keypoints
    audio: np.ndarray  # (N, 512) audio features

    def window(self, r: int, length: int) -> dict[str, torch.Tensor]:
        """Reference index r -> dict(x0 (L,70), ref (70,), ori (70,), audio (L,512)) float32 tensors."""
        ori = np.concatenate([np.zeros(7, np.float32), self.kp[r]])
        return {
            "x0": torch.from_numpy(np.ascontiguousarray(self.motion[r + 1 : r + 1 + length])),
            "ref": torch.from_numpy(self.motion[r].copy()),
            "ori": torch.from_numpy(ori),
            "audio": torch.from_numpy(np.ascontiguousarray(self.audio[r + 1 : r + 1 + length])),
        }


def normalise_clip(clip: Clip, norm, name: str = "") -> NormalisedClip:
    """Raw Clip -> NormalisedClip with the official truncation min(T - 1, Ta - 2)."""
    n = clip.num_aligned
    f = {k: v[:n] for k, v in clip.motion.items()}
    raw = pack_motion(scale=f["scale"], yaw=f["yaw"], pitch=f["pitch"], roll=f["roll"], t=f["t"], exp=f["exp"])
    motion = np.asarray(norm.normalize(raw), np.float32)
    kp = np.asarray(norm.normalize_kp(f["kp"].reshape(n, 63)), np.float32)
    return NormalisedClip(name, motion, kp, clip.aud_feat[:n].copy())


class MotionWindows(Dataset):
    """Random `window`-frame training windows over clips; deterministic given (seed, epoch, index).

    Train mode draws r uniformly from [0, N-1-window] anew each epoch (set_epoch); eval mode fixes r per
    index, so the validation loss is comparable across steps. `samples_per_clip` repeats every clip within
    an epoch (1 = the official one window per clip per epoch).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        norm,
        window: int = 64,
        samples_per_clip: int = 1,
        seed: int = 0,
        train: bool = True,
        log: Callable[[str], None] = tqdm.write,
    ) -> None:
        self.window, self.samples_per_clip, self.seed, self.train = window, samples_per_clip, seed, train
        self.epoch = 0
        self.clips: list[NormalisedClip] = []
        for path in tqdm(list(paths), desc="load shards", unit="clip", leave=False):
            clip = read_shard(path)
            if clip.num_aligned < window + 1:
                log(f"skip {path}: {clip.num_aligned} aligned frames, a {window}-frame window needs {window + 1}")
                continue
            self.clips.append(normalise_clip(clip, norm, Path(path).stem))
        if not self.clips:
            raise KDTalkerError(
                f"no usable clips (each needs at least {window + 1} aligned frames) among {len(paths)} shards"
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose windows __getitem__ returns (train mode)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips) * self.samples_per_clip

    def ref_index(self, index: int) -> int:
        """Reference frame r for `index` in the current epoch."""
        clip = self.clips[index % len(self.clips)]
        key = [self.seed, self.epoch, index] if self.train else [self.seed, index]
        return int(np.random.default_rng(key).integers(0, len(clip.motion) - 1 - self.window, endpoint=True))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.clips[index % len(self.clips)].window(self.ref_index(index), self.window)
