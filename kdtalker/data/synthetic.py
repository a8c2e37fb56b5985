"""Synthetic shards with a known audio -> lip relation, to exercise training without VoxCeleb.

Each clip has a hidden "mouth opening" signal m(t) (smoothed, rectified noise at a syllable-like rate)
and an unrelated distractor d(t). The audio features carry both: aud = g·m(t)·u + d(t)·v + noise, with
u, v fixed random 512-d directions. The exp offsets of the mouth keypoints (LivePortrait's 6, 12, 14, 17, 19, 20:
data.lip_keypoints) move along a fixed pattern with amplitude m(t); the eye keypoints (11, 13, 15, 16, 18:
data.synthetic.eye_keypoints) along another with a blink signal b(t) (short bumps at random times, independent of
the audio); the head pose is a resting orientation plus smooth turns and nods of about the same spread (so that
following it is visible within a clip); every other channel (translation, scale, other keypoints) drifts as an
independent random walk. A model that uses the audio can predict the lips frame by frame; nothing in the audio
predicts the pose or the eyes, which a driving motion signal (the clip's own motion, in multi-signal training) carries.

The clips are in a renderer's motion layout: LivePortrait's (21 keypoints, a scale) or Face-vid2vid's (15 keypoints,
no scale; its keypoints have no names, so the "lips" and "eyes" are the keypoints the config picks).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from kdtalker.data.shards import AUDIO_DIM, Clip, write_shard
from kdtalker.errors import ConfigError, OutputError
from kdtalker.fileio import PART_SUFFIX, atomic_path
from kdtalker.motion_layout import MotionLayout

META_FILE = "synthetic.json"  # the parameters of the shards in a generated folder
SHARD_NAME = re.compile(r"synth_\d{4,}\.npz")


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (edge-padded)."""
    radius = int(3 * sigma) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x, [(radius, radius)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, padded)


def _random_walk(rng: np.random.Generator, frames: int, dims: int, step: float) -> np.ndarray:
    """(frames, dims) smooth random walk starting at 0."""
    return _smooth(np.cumsum(rng.normal(0.0, step, (frames, dims)), 0), 2.0)


def blinks(rng: np.random.Generator, frames: int, fps: float = 25.0, rate: float = 0.5) -> np.ndarray:
    """(frames,) eye-closure signal in [0, 1]: Gaussian bumps of ~0.15 s at Poisson times, `rate` per second."""
    times = np.flatnonzero(rng.random(frames) < rate / fps)
    t = np.arange(frames)[:, None]
    width = 0.06 * fps
    return np.clip(np.exp(-0.5 * ((t - times[None, :]) / width) ** 2).sum(1), 0.0, 1.0)


def synthetic_clip(
    index: int,
    seed: int,
    frames: int,
    layout: MotionLayout,
    lips: tuple[int, ...],
    eyes: tuple[int, ...],
    fps: float = 25.0,
) -> Clip:
    """Clip `index` of the synthetic dataset `seed` in `layout` (deterministic): the `lips` keypoints follow the
    audio, the pose drifts, the `eyes` keypoints blink."""
    kps, lips, eyes = layout.num_kp, list(lips), list(eyes)
    if not lips or set(lips) & set(eyes) or not all(0 <= k < kps for k in lips + eyes):
        raise ConfigError(
            f"synthetic data: lip keypoints {lips} and eye keypoints {eyes} must be disjoint, the lips non-empty, "
            f"each among the {layout.name} layout's {kps} keypoints (data.lip_keypoints, data.synthetic.eye_keypoints)"
        )
    shared = np.random.default_rng([seed, 0x5EED])  # dataset-wide constants
    u = shared.normal(size=AUDIO_DIM)
    u /= np.linalg.norm(u) / np.sqrt(AUDIO_DIM)
    v = shared.normal(size=AUDIO_DIM)
    v /= np.linalg.norm(v) / np.sqrt(AUDIO_DIM)
    lip_pattern = shared.normal(size=(len(lips), 3))
    lip_pattern /= np.abs(lip_pattern).max()
    kp_mean = shared.uniform(-0.6, 0.6, (kps, 3))
    exp_mean = shared.normal(0.0, 0.01, (kps, 3))

    rng = np.random.default_rng([seed, index])
    mouth = np.maximum(_smooth(rng.normal(size=(frames, 1)), 0.6) * 1.5, 0.0)[:, 0]  # (T,) >= 0
    distractor = _smooth(rng.normal(size=(frames, 1)), 3.0)[:, 0] * 2.0
    gain = rng.uniform(0.8, 1.2)
    aud_feat = gain * mouth[:, None] * u + distractor[:, None] * v + rng.normal(0.0, 0.3, (frames, AUDIO_DIM))

    exp = (
        exp_mean + rng.normal(0.0, 0.002, (kps, 3)) + _random_walk(rng, frames, 3 * kps, 0.001).reshape(frames, kps, 3)
    )
    lip_amp = 0.03 * rng.uniform(0.8, 1.2)
    exp[:, lips, :] = exp_mean[lips] + lip_amp * mouth[:, None, None] * lip_pattern
    # Blinks come from a stream of their own, so the draws above (and the clips of version 1) are unchanged.
    eye_rng = np.random.default_rng([seed, index, 0xE7E])
    eye_pattern = shared.normal(size=(len(eyes), 3))
    eye_pattern /= np.abs(eye_pattern).max() if eyes else 1.0
    exp[:, eyes, :] = exp_mean[eyes] + 0.03 * blinks(eye_rng, frames, fps)[:, None, None] * eye_pattern

    # head motion (yaw, pitch, roll degrees): a resting orientation plus turns and nods of about the same spread
    turns = _smooth(rng.normal(size=(frames, 3)), 6.0)
    pose = rng.normal(0.0, [8.0, 5.0, 3.0]) + turns / (turns.std(0) + 1e-8) * [8.0, 5.0, 3.0]
    t = np.concatenate([_random_walk(rng, frames, 2, 0.002) + rng.normal(0.0, 0.02, 2), np.zeros((frames, 1))], 1)
    scale = 1.5 + rng.normal(0.0, 0.05) + _random_walk(rng, frames, 1, 0.001)  # drawn in every layout: same streams
    kp = np.broadcast_to(kp_mean + rng.normal(0.0, 0.02, (kps, 3)), (frames, kps, 3)) + rng.normal(
        0.0, 1e-3, (frames, kps, 3)
    )

    motion = {
        "scale": scale,
        "yaw": pose[:, :1],
        "pitch": pose[:, 1:2],
        "roll": pose[:, 2:3],
        "t": t,
        "exp": exp,
        "kp": kp,
    }
    keep = (*(name for name, _ in layout.parts), "kp")
    motion = {k: np.asarray(motion[k], np.float32) for k in keep}
    return Clip(motion, aud_feat.astype(np.float32), fps, layout)


def _foreign_entries(folder: Path) -> list[str]:
    """Names in `folder` that generate_synthetic never makes (its shards, its record, temporary parts aside)."""
    if not folder.is_dir():
        return []
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.name != META_FILE and not SHARD_NAME.fullmatch(entry.name) and not entry.name.endswith(PART_SUFFIX)
    )


def generate_synthetic(
    root: str | os.PathLike,
    num_clips: int,
    seed: int = 0,
    min_frames: int = 130,
    max_frames: int = 200,
    first_index: int = 0,
    what: str = "the synthetic data folder",
    *,
    layout: MotionLayout,
    lips: tuple[int, ...],
    eyes: tuple[int, ...],
) -> list[Path]:
    """Write clips first_index.. first_index+num_clips-1 in `layout` as `root/synth_XXXX.npz`; reuses matching shards.

    `root` is the generator's own folder: new, or holding only what an earlier call made (OutputError otherwise,
    naming it as `what`), so that no file of the user's is deleted or mixed with generated shards.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise OutputError(f"{what}={root} is a file, not a folder; choose a new folder for the generated shards")
    foreign = _foreign_entries(root)
    if foreign:
        raise OutputError(
            f"{what}={root} holds files the synthetic data generator did not make ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}); choose a new folder for the generated shards"
        )
    root.mkdir(parents=True, exist_ok=True)
    params = {
        "num_clips": num_clips,
        "seed": seed,
        "min_frames": min_frames,
        "max_frames": max_frames,
        "first_index": first_index,
        "version": 3,
        "layout": layout.name,
        "lips": [int(k) for k in lips],
        "eyes": [int(k) for k in eyes],
    }
    meta = root / META_FILE
    if not meta.exists() or json.loads(meta.read_text()) != params:
        for old in root.glob("synth_*.npz"):
            old.unlink()
        # The record comes first: it marks the folder as the generator's own, also when a run is killed mid-way.
        with atomic_path(meta, "the synthetic data's record") as tmp:
            tmp.write_text(json.dumps(params))
    paths = []
    lengths = np.random.default_rng([seed, 0x1E5]).integers(min_frames, max_frames + 1, first_index + num_clips)
    for index in range(first_index, first_index + num_clips):
        path = root / f"synth_{index:04d}.npz"
        if not path.exists():
            write_shard(path, synthetic_clip(index, seed, int(lengths[index]), layout, lips, eyes))
        paths.append(path)
    return paths
