"""Keyframes: frames of the clip held at a given pose while the motion is sampled (the sampler's known entries).

The `keyframes` setting: null (none); "loop" (the first and the last frame at the source's head pose, so the clip
loops without a jump); or a list of {time: SECONDS | start | end, pose: source}. A keyframe holds the pose channels
(yaw, pitch, roll, t) of its frame; the sampler inpaints the rest of the motion around it (sampling.py, `Known`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from kdtalker.diffusion import Known
from kdtalker.diffusion.motion import POSE
from kdtalker.errors import ConfigError

POSES = ("source",)  # the poses a keyframe can hold: the source image's
TIMES = ("start", "end")  # named times: the first and the last frame
FORM = "keyframes takes null, loop, or a list of {time: seconds | start | end, pose: source}"


@dataclass(frozen=True)
class Keyframe:
    """One held frame: `time` in seconds from the start (or "start" / "end"), `pose` held there ("source")."""

    time: float | str
    pose: str

    def frame(self, num_frames: int, fps: float) -> int:
        """The frame index of this keyframe in a clip of num_frames at fps; ConfigError when it is past the end."""
        if self.time in TIMES:
            return 0 if self.time == "start" else num_frames - 1
        index = int(round(float(self.time) * fps))
        if index >= num_frames:
            raise ConfigError(
                f"keyframes: time {self.time:g} s is past the clip's last frame ({(num_frames - 1) / fps:g} s)"
            )
        return index


LOOP = (Keyframe("start", "source"), Keyframe("end", "source"))


def keyframes_of(value: Any) -> tuple[Keyframe, ...]:
    """The `keyframes` setting (null, "loop", a list of {time, pose} or of Keyframe) -> Keyframes; ConfigError."""
    if value is None:
        return ()
    if isinstance(value, str):
        if value == "loop":
            return LOOP
        raise ConfigError(f"keyframes={value!r} is not valid: {FORM}")
    if not isinstance(value, Sequence):
        raise ConfigError(f"keyframes={value!r} is not valid: {FORM}")
    return tuple(_keyframe(item) for item in value)


def _keyframe(item: Any) -> Keyframe:
    """One list entry -> Keyframe, checked."""
    if isinstance(item, Keyframe):
        time, pose = item.time, item.pose
    elif isinstance(item, Mapping) and set(item) == {"time", "pose"}:
        time, pose = item["time"], item["pose"]
    else:
        raise ConfigError(f"keyframes entry {item!r} is not valid: {FORM}")
    timed = not isinstance(time, bool) and isinstance(time, (int, float)) and time >= 0
    if not (timed or time in TIMES):
        raise ConfigError(f"keyframes entry {item!r}: time must be seconds >= 0, start or end")
    if pose not in POSES:
        raise ConfigError(f"keyframes entry {item!r}: pose must be one of {POSES}")
    return Keyframe(float(time) if timed else time, pose)


def keyframe_rows(keyframes: Sequence[Keyframe], num_frames: int, fps: float) -> list[int]:
    """The held frame indices, sorted and unique."""
    return sorted({k.frame(num_frames, fps) for k in keyframes})


def known_frames(keyframes: Sequence[Keyframe], num_frames: int, fps: float, source: torch.Tensor) -> Known | None:
    """Keyframes -> the sampler's held entries (1, T, 70) over a clip of num_frames; source: the normalised source
    motion (70,) whose pose the keyframes hold. None when there are none."""
    rows = keyframe_rows(keyframes, num_frames, fps)
    if not rows:
        return None
    values = source.new_zeros(1, num_frames, source.shape[-1])
    mask = torch.zeros(1, num_frames, source.shape[-1], dtype=torch.bool, device=source.device)
    values[0, rows, POSE] = source[POSE]
    mask[0, rows, POSE] = True
    return Known(values, mask)
