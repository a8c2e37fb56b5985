"""What a user may change per run (`Controls`), checked value by value, and how a run's keywords update them.

The values come from the inference config (kdtalker/configs/inference.yaml; `controls_from_config` in build.py):
the dataclass declares the keys and their types, never a default.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, Mapping

import torch

from kdtalker.config import describe_type
from kdtalker.diffusion import Guidance
from kdtalker.diffusion.multisignal import SIGNAL_REGIONS
from kdtalker.errors import ConfigError
from kdtalker.pipeline.control import Control
from kdtalker.pipeline.face import FaceCropper
from kdtalker.pipeline.keyframes import Keyframe, keyframes_of
from kdtalker.pipeline.silence import Silence

MOTION_MODES = ("absolute", "relative")


@dataclass(frozen=True)
class Controls:
    """What a user may change per run; the inference config's values are the official behaviour."""

    seed: int
    steps: int  # sampler steps
    hop: int | None  # frames each 64-frame sampling window advances by; the rest are held (inpainted); 64 = official
    keyframes: tuple  # Keyframe, ... (keyframes.py): frames held at a pose while sampling; () = none
    smoothing: float  # Kalman smoothing strength: 1 = official (observation cov 0.001), 0 = off, > 1 smoother
    head_motion_scale: float  # scales the predicted pose's deviation from the source pose; 0 = still head
    motion_mode: str  # "absolute" (official) | "relative": the motion's deltas added to the source pose
    stitching: bool  # LivePortrait stitching of x_d (not in the official generate path)
    paste_back: bool  # put the animated crop back into the full source image
    batch_size: int | None  # frames rendered per batch; None = the device's fastest (default_batch_size)
    fps: float
    crf: int  # H.264 quality (lower = better, bigger)
    crop: FaceCropper  # the crop method with its scale and face index (the crop config group)
    control: Control  # which signal drives which region (control.py)
    signals: str  # audio | motion | both: the inputs of a multi-signal model (model=kdtalker_multisignal)
    guidance: Guidance  # classifier-free guidance scales; 1 = none
    silence: Silence  # pause detection and the lips in pauses (silence.py); detector none = official

    def validate(self) -> "Controls":
        """ConfigError for a value of the wrong type or out of range; returns self."""
        for name, kind in typing.get_type_hints(Controls).items():
            value = getattr(self, name)
            if not _is_of_kind(value, kind):
                raise ConfigError(f"{name}={value!r} is not valid: {name} takes {describe_type(Controls, name)}")
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (
                self.hop is None or self.hop >= 1,
                f"hop={self.hop} must be a whole number of frames from 1 to the model's window",
            ),
            (
                all(isinstance(k, Keyframe) for k in self.keyframes),
                f"keyframes={self.keyframes!r} is not valid: build them with keyframes.keyframes_of",
            ),
            (self.smoothing >= 0, f"smoothing must be >= 0, got {self.smoothing}"),
            (self.head_motion_scale >= 0, f"head_motion_scale must be >= 0, got {self.head_motion_scale}"),
            (self.motion_mode in MOTION_MODES, f"motion_mode must be one of {MOTION_MODES}, got {self.motion_mode!r}"),
            (self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.fps > 0, f"fps must be positive, got {self.fps}"),
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
        self.silence.validate()
        return self

    def updated(self, overrides: Mapping[str, Any], device: torch.device) -> "Controls":
        """These controls with a run's keyword overrides, validated, batch_size filled in for `device`.

        The nested settings take a mapping of their keys, as on the command line: `control={"pose": "video"}`,
        `guidance={"audio": 2.0}`, `crop={"scale": 1.2}`,
        `silence={"detector": "silero"}`; keyframes its YAML form (`keyframes="loop"`)."""
        known = {f.name for f in fields(Controls)}
        if set(overrides) - known:
            raise ConfigError(f"unknown control(s) {sorted(set(overrides) - known)}; known: {sorted(known)}")
        overrides = dict(overrides)
        if "keyframes" in overrides and not isinstance(overrides["keyframes"], tuple):
            overrides["keyframes"] = keyframes_of(overrides["keyframes"])  # null, "loop" or a list, as in the YAML
        for name in ("control", "guidance", "crop", "silence"):  # a mapping changes some keys of the run's settings
            if isinstance(overrides.get(name), Mapping):
                overrides[name] = _changed(getattr(self, name), overrides[name], name)
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


def _changed(settings: Any, changes: Mapping[str, Any], name: str) -> Any:
    """A dataclass of settings (a crop method) with some of its keys changed; ConfigError for a key it lacks."""
    known = {f.name for f in fields(settings)} if is_dataclass(settings) else set()
    unknown = set(changes) - known
    if unknown:
        raise ConfigError(f"unknown {name} key(s) {sorted(unknown)}; known: {sorted(known)}")
    return replace(settings, **changes)


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


def default_batch_size(device: torch.device) -> int:
    """Frames per render batch that measured fastest per frame (README, "Speed"): 1 on CPU, where a bigger batch
    only adds memory traffic (batch 4 cost 12% more per frame on a 2-core AVX-512 CPU), 16 on a GPU."""
    return 16 if device.type == "cuda" else 1
