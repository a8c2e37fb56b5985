"""Types of the inference config's keys (kdtalker/configs/inference.yaml holds their values and defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class CropConfig:
    """The keys every crop method has (kdtalker/configs/crop/*.yaml); its _target_ takes them with its own others."""

    scale: float = MISSING
    face_index: int = MISSING


@dataclass
class KalmanConfig:
    """The `kalman` node: official pykalman covariances."""

    transition_cov: float = MISSING
    observation_cov: float = MISSING


@dataclass
class ControlConfig:
    """The `control` node: the signal per region and its strength (kdtalker.pipeline.control.Control)."""

    pose: str = MISSING
    lips: str = MISSING
    eyes: str = MISSING
    expression: str = MISSING
    pose_strength: float = MISSING
    lips_strength: float = MISSING
    eyes_strength: float = MISSING
    expression_strength: float = MISSING


@dataclass
class GuidanceConfig:
    """The `guidance` node: classifier-free guidance scales (kdtalker.diffusion.guidance.Guidance)."""

    audio: float = MISSING
    motion: float = MISSING


@dataclass
class SilenceConfig:
    """The `silence` node: voice-activity detection and the lips in pauses (kdtalker.pipeline.silence.Silence)."""

    detector: str = MISSING
    threshold: float = MISSING
    aggressiveness: int = MISSING
    min_pause: float = MISSING
    ramp: float = MISSING
    neutral: str = MISSING


@dataclass
class LiveConfig:
    """The `live` node: the controls live sessions take instead of the run's (kdtalker.pipeline.live)."""

    hop: int = MISSING


@dataclass
class InferenceConfig:
    """The top level of inference.yaml; the groups (audio, renderer, model, diffusion, crop) are built by _target_,
    whose constructors check their own keys."""

    source_image: Optional[str] = MISSING
    source_video: Optional[str] = MISSING
    driven_audio: Optional[str] = MISSING
    output: Optional[str] = MISSING
    checkpoint_dir: str = MISSING
    download: str = MISSING
    save_motion: Optional[str] = MISSING
    motion_file: Optional[str] = MISSING
    driving_video: Optional[str] = MISSING
    pose_file: Optional[str] = MISSING
    device: str = MISSING
    dtype: str = MISSING
    seed: int = MISSING
    steps: int = MISSING
    hop: Optional[int] = MISSING
    keyframes: Any = MISSING  # null | loop | [{time, pose}] (kdtalker.pipeline.keyframes)
    smoothing: float = MISSING
    head_motion_scale: float = MISSING
    motion_mode: str = MISSING
    stitching: bool = MISSING
    paste_back: bool = MISSING
    batch_size: Optional[int] = MISSING
    fps: float = MISSING
    crf: int = MISSING
    overlap: Optional[bool] = MISSING
    cuda_graphs: Optional[bool] = MISSING
    compile: bool = MISSING
    kalman: KalmanConfig = field(default_factory=KalmanConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    signals: str = MISSING
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    silence: SilenceConfig = field(default_factory=SilenceConfig)


@dataclass
class LiveRunConfig(InferenceConfig):
    """kdtalker/configs/live.yaml: the inference config + where the live speech comes from and where it goes."""

    wav: Optional[str] = MISSING
    stdin_format: str = MISSING
    out: Optional[str] = MISSING
    render: bool = MISSING
    motion_out: Optional[str] = MISSING
    realtime: bool = MISSING
    chunk_ms: float = MISSING
