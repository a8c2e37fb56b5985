"""Which signal drives which part of the face: the head pose, the lips, the eyes, the rest of the expression.

Signals, all as raw motion rows [scale, yaw, pitch, roll, t(3), exp(63)] in LivePortrait's keypoint space:
- audio: KDTalker's sampled motion (the official path);
- video: a driving video's motion relative to its first frame, put on the source (LivePortrait's relative
  motion: R = R_i R_0^T R_source, t = t_source + (t_i - t_0), exp = exp_source + (exp_i - exp_0));
- source / still: the source image's own expression / pose; file: a head-pose trajectory the user wrote.
Regions are LivePortrait's keypoint groups; a strength s blends a region's signal with the source:
source + s (signal - source). The scale stays the source's, as in KDTalker's absolute composition.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from kdtalker.diffusion.motion import ANGLES, EXPRESSION, REGION_CHANNELS, SCALE, TRANSLATION, unpack_motion
from kdtalker.errors import ConfigError
from kdtalker.renderer.keypoints import rotation_angles, rotation_matrix

CHOICES = {
    "pose": ("audio", "video", "still", "file"),
    "lips": ("audio", "video"),
    "eyes": ("audio", "video", "source"),
    "expression": ("audio", "video", "source"),
}
POSE_COLUMNS = ("yaw", "pitch", "roll")


@dataclass(frozen=True)
class Control:
    """The signal per region and its strength (the inference config's `control` node; all from the audio at
    strength 1 is the official behaviour)."""

    pose: str  # audio | video | still (the source pose) | file (pose_file)
    lips: str  # audio | video
    eyes: str  # audio | video | source
    expression: str  # audio | video | source: the keypoints that are neither lips nor eyes
    pose_strength: float
    lips_strength: float
    eyes_strength: float
    expression_strength: float

    def validate(self) -> "Control":
        """ConfigError for an unknown signal or a strength outside [0, 1]; returns self."""
        for region, choices in CHOICES.items():
            value = getattr(self, region)
            if value not in choices:
                raise ConfigError(f"control.{region}={value!r} is not one of {choices}")
            strength = getattr(self, f"{region}_strength")
            if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
                raise ConfigError(f"control.{region}_strength={strength!r} must be a number in [0, 1]")
        return self

    @classmethod
    def of(cls, value: "Control | Mapping[str, Any]") -> "Control":
        """A Control from itself or a mapping of all its keys (the config's `control` node), validated."""
        if isinstance(value, Control):
            return value.validate()
        names = [f.name for f in fields(cls)]
        unknown, missing = set(value) - set(names), [n for n in names if n not in value]
        if unknown or missing:
            wrong = f"unknown control key(s) {sorted(unknown)}" if unknown else f"control keys {missing} missing"
            raise ConfigError(f"{wrong}; known: {names}")
        return cls(**dict(value)).validate()

    def uses(self, signal: str) -> bool:
        return signal in (self.pose, self.lips, self.eyes, self.expression)

    @property
    def is_audio_only(self) -> bool:
        """The official path: every region from the audio at full strength (nothing to mix)."""
        return all(getattr(self, r) == "audio" and getattr(self, f"{r}_strength") == 1 for r in CHOICES)


def mix_motion(
    control: Control,
    source: torch.Tensor,
    audio: torch.Tensor | None = None,
    video: torch.Tensor | None = None,
    pose: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rows of each signal (n, 70) (source (70,)) -> the mixed motion (n, 70); `pose` (n, 6): angles + t."""
    rows = next(x for x in (audio, video, pose) if x is not None).shape[0]
    src = source.reshape(1, -1).float().expand(rows, -1)
    signals = {"audio": audio, "video": video, "source": src, "still": src}
    if pose is not None:
        signals["file"] = torch.cat([src[:, SCALE], pose, src[:, EXPRESSION]], dim=1)
    out = src.clone()

    def blend(columns, signal: str, strength: float) -> None:
        chosen = signals[signal]
        if chosen is None:
            raise ConfigError(f"control asks for the {signal} signal, which this run does not have")
        if strength == 1:  # exactly the signal (no rounding through the blend)
            out[:, columns] = chosen[:, columns]
        else:
            out[:, columns] = src[:, columns] + strength * (chosen[:, columns] - src[:, columns])

    for region, columns in REGION_CHANNELS.items():
        blend(columns, getattr(control, region), getattr(control, f"{region}_strength"))
    return out


def relative_video_motion(video: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """A driving video's raw motion (V, 70) -> its motion relative to frame 0, put on the source (V, 70)."""
    src = source.reshape(1, -1).float()
    video = video.float()

    def rot(m: torch.Tensor) -> torch.Tensor:
        d = unpack_motion(m)
        return rotation_matrix(d["pitch"], d["yaw"], d["roll"])

    r = rot(video) @ rot(video[:1]).transpose(1, 2) @ rot(src)
    pitch, yaw, roll = rotation_angles(r)
    out = src.repeat(video.shape[0], 1)
    out[:, ANGLES] = torch.stack([yaw, pitch, roll], dim=1)  # the layout's order
    out[:, TRANSLATION] = src[:, TRANSLATION] + (video[:, TRANSLATION] - video[:1, TRANSLATION])
    out[:, EXPRESSION] = src[:, EXPRESSION] + (video[:, EXPRESSION] - video[:1, EXPRESSION])
    return out


def ping_pong(length: int, frames: int) -> np.ndarray:
    """Indices into `length` items for `frames` outputs: 0, 1, ..., L-1, L-2, ..., 1, 0, 1, ... (cut if longer)."""
    if length == 1:
        return np.zeros(frames, np.int64)
    cycle = np.concatenate([np.arange(length), np.arange(length - 2, 0, -1)])
    return cycle[np.arange(frames) % len(cycle)]


def fill_missing(motion: torch.Tensor, found: np.ndarray) -> torch.Tensor:
    """Rows whose frame had no face (found False) take the nearest found row's motion (the earlier on a tie)."""
    good = np.flatnonzero(found)
    if good.size == 0:
        raise ConfigError("the driving video shows no face in any frame")
    index = np.arange(len(found))
    nearest = good[np.abs(index[:, None] - good[None, :]).argmin(axis=1)]
    return motion[torch.from_numpy(nearest)]


def load_pose_file(path: str | os.PathLike, frames: int, fps: float, source: torch.Tensor) -> torch.Tensor:
    """A head-pose trajectory -> (frames, 6) [yaw, pitch, roll (degrees), tx, ty, tz] rows as the motion stores them.

    .csv with a header yaw,pitch,roll[,tx,ty][,time] or .npz with those arrays; one row per output frame, or a
    `time` column (seconds) interpolated at the frames' times. Shorter files hold their last row. Translation the
    file leaves out (tx, ty; tz always) is the source's (`source`: its raw motion (70,)).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pose_file {path} not found")
    columns = _read_pose_columns(path)
    missing = [c for c in POSE_COLUMNS if c not in columns]
    if missing:
        raise ConfigError(f"pose_file {path} lacks the column(s) {missing}; it needs yaw,pitch,roll[,tx,ty][,time]")
    names = list(POSE_COLUMNS) + [c for c in ("tx", "ty") if c in columns]
    try:
        table = np.stack([np.asarray(columns[c], np.float64).reshape(-1) for c in names], axis=1)
        times = np.asarray(columns["time"], np.float64).reshape(-1) if "time" in columns else None
    except ValueError as exc:
        raise ConfigError(f"pose_file {path}: its columns are not numbers of one length ({exc})") from None
    if len(table) == 0 or not np.isfinite(table).all() or (times is not None and not np.isfinite(times).all()):
        raise ConfigError(f"pose_file {path} is empty or holds NaN/inf values")
    if times is not None:
        if len(times) != len(table) or np.any(np.diff(times) <= 0):
            raise ConfigError(f"pose_file {path}: the time column must rise strictly, one value per row")
        at = np.arange(frames) / fps
        table = np.stack([np.interp(at, times, table[:, i]) for i in range(table.shape[1])], axis=1)
    elif len(table) < frames:
        table = np.concatenate([table, np.repeat(table[-1:], frames - len(table), axis=0)])
    out = source.reshape(-1)[ANGLES.start : TRANSLATION.stop].float().repeat(frames, 1)  # the source's pose
    out[:, : len(names)] = torch.from_numpy(table[:frames].astype(np.float32))
    return out


def _read_pose_columns(path: Path) -> dict[str, np.ndarray]:
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ConfigError(f"pose_file {path} is not a readable .npz ({exc})") from None
    if path.suffix.lower() != ".csv":
        raise ConfigError(f"pose_file {path} must be a .csv or an .npz")
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = [h.strip() for h in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"pose_file {path} is not a readable .csv ({exc})") from None
    try:
        return {h: np.array([float(r[h]) for r in rows]) for h in header if h}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"pose_file {path}: a value is not a number ({exc})") from None
