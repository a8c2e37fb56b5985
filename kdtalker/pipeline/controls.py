"""What a user may change per run (`Controls`), checked value by value, and how a run's keywords update them."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

import torch

from kdtalker.config import describe_type
from kdtalker.diffusion import Guidance
from kdtalker.diffusion.multisignal import SIGNAL_REGIONS
from kdtalker.errors import ConfigError
from kdtalker.pipeline.control import Control

MOTION_MODES = ("absolute", "relative")
CROP_METHODS = ("dlib", "insightface")


@dataclass
class Controls:
    """What a user may change per run; every default is the official behaviour."""

    seed: int = 0
    steps: int = 50  # DDIM steps
    smoothing: float = 1.0  # Kalman smoothing strength: 1 = official (observation cov 0.001), 0 = off, > 1 smoother
    head_motion_scale: float = 1.0  # scales the predicted pose's deviation from the source pose; 0 = still head
    motion_mode: str = "absolute"  # official default; "relative" adds the motion's deltas to the source pose
    stitching: bool = False  # LivePortrait stitching of x_d (not in the official generate path)
    paste_back: bool = False  # put the animated crop back into the full source image
    batch_size: int | None = None  # frames rendered per batch; None = the device's fastest (default_batch_size)
    fps: float = 25.0
    crop_method: str = "dlib"
    crop_scale: float = 1.0  # > 1 includes more around the face (1 = the method's own crop)
    face_index: int = 0  # 0 = largest face, 1 = second largest, ...
    crf: int = 18  # H.264 quality (lower = better, bigger)
    control: Control = field(default_factory=Control)  # which signal drives which region (control.py)
    signals: str = "audio"  # audio | motion | both: the inputs of a multi-signal model (model=kdtalker_multisignal)
    guidance: Guidance = field(default_factory=Guidance)  # classifier-free guidance scales; 1 = none

    def validate(self) -> "Controls":
        """ConfigError for a value of the wrong type or out of range; returns self."""
        for name, kind in typing.get_type_hints(Controls).items():
            value = getattr(self, name)
            if not _is_of_kind(value, kind):
                raise ConfigError(f"{name}={value!r} is not valid: {name} takes {describe_type(Controls, name)}")
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.smoothing >= 0, f"smoothing must be >= 0, got {self.smoothing}"),
            (self.head_motion_scale >= 0, f"head_motion_scale must be >= 0, got {self.head_motion_scale}"),
            (self.motion_mode in MOTION_MODES, f"motion_mode must be one of {MOTION_MODES}, got {self.motion_mode!r}"),
            (self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.fps > 0, f"fps must be positive, got {self.fps}"),
            (self.crop_method in CROP_METHODS, f"crop must be one of {CROP_METHODS}, got {self.crop_method!r}"),
            (self.crop_scale > 0, f"crop.scale must be positive, got {self.crop_scale}"),
            (self.face_index >= 0, f"crop.face_index must be >= 0, got {self.face_index}"),
            (0 <= self.crf <= 51, f"crf must be in 0..51, got {self.crf}"),
            (
                self.signals in SIGNAL_REGIONS,
                f"signals must be one of {tuple(SIGNAL_REGIONS)}, got {self.signals!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.control.validate()
        self.guidance.validate()
        return self

    def updated(self, overrides: Mapping[str, Any], device: torch.device) -> "Controls":
        """These controls with a run's keyword overrides, validated, batch_size filled in for `device`."""
        known = {f.name for f in fields(Controls)}
        if set(overrides) - known:
            raise ConfigError(f"unknown control(s) {sorted(set(overrides) - known)}; known: {sorted(known)}")
        if "control" in overrides:
            overrides = {**overrides, "control": Control.of(overrides["control"])}
        if "guidance" in overrides:
            overrides = {**overrides, "guidance": guidance_of(overrides["guidance"])}
        ctl = replace(self, **overrides).validate()
        return ctl if ctl.batch_size is not None else replace(ctl, batch_size=default_batch_size(device))

    @property
    def uses_audio(self) -> bool:
        """Whether the sampled motion follows the audio (the official path does)."""
        return self.signals != "motion"

    @property
    def uses_motion(self) -> bool:
        """Whether a driving motion goes into the multi-signal model."""
        return self.signals != "audio"


def _is_of_kind(value: Any, kind: Any) -> bool:
    """isinstance for a control: bool is no int (Python says it is), a whole float is no int; an int is a float."""
    if isinstance(kind, types.UnionType):
        return any(_is_of_kind(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def guidance_of(value: Guidance | Mapping[str, Any] | None) -> Guidance:
    """A Guidance from itself, a dict of its keys (a config node) or None (no guidance)."""
    if value is None or isinstance(value, Guidance):
        return value or Guidance()
    known = {f.name for f in fields(Guidance)}
    if set(value) - known:
        raise ConfigError(f"unknown guidance key(s) {sorted(set(value) - known)}; known: {sorted(known)}")
    return Guidance(**dict(value)).validate()


def default_batch_size(device: torch.device) -> int:
    """Frames per render batch that measured fastest per frame (README, "Speed"): 1 on CPU, where a bigger batch
    only adds memory traffic (batch 4 cost 12% more per frame on a 2-core AVX-512 CPU), 16 on a GPU."""
    return 16 if device.type == "cuda" else 1
