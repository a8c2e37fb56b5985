"""Types of the training config's keys (kdtalker/configs/train.yaml holds their values and defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING


@dataclass
class EMAConfig:
    """train.ema"""

    enabled: bool = MISSING
    decay: float = MISSING
    every: int = MISSING


@dataclass
class MaskDropConfig:
    """train.mask_drop (multi-signal models)"""

    audio: float = MISSING
    motion: float = MISSING
    both: float = MISSING
    region: float = MISSING
    lips_from_audio: bool = MISSING


@dataclass
class TrainControls:
    """The `train` node: the optimiser recipe, checkpoints, validation."""

    out_dir: str = MISSING
    resume: Optional[str] = MISSING  # auto | null | a checkpoint path
    init_from: Optional[str] = MISSING
    max_steps: int = MISSING
    schedule_steps: Optional[int] = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    betas: List[float] = MISSING
    eps: float = MISSING
    weight_decay: float = MISSING
    no_decay: List[str] = MISSING
    warmup_steps: int = MISSING
    grad_clip: float = MISSING
    audio_noise_prob: float = MISSING
    mask_drop: MaskDropConfig = field(default_factory=MaskDropConfig)
    precision: str = MISSING
    num_workers: int = MISSING
    ema: EMAConfig = field(default_factory=EMAConfig)
    log_every: int = MISSING
    ckpt_every: int = MISSING
    val_every: int = MISSING
    val_batch_size: int = MISSING
    val_sample_clips: int = MISSING
    val_sample_frames: int = MISSING
    val_sample_steps: int = MISSING


@dataclass
class TrainConfig:
    """The top level of kdtalker/configs/train.yaml; the data/model/diffusion groups are built by _target_."""

    seed: int = MISSING
    device: str = MISSING
    torch_threads: Optional[int] = MISSING
    train: TrainControls = field(default_factory=TrainControls)


@dataclass
class CheckConfig:
    """The `check` node of kdtalker/configs/learning_check.yaml (kdtalker/configs/check/)."""

    kind: str = MISSING  # lips | multisignal
    clips: int = MISSING
    frames: int = MISSING
    steps: int = MISSING


@dataclass
class LearningCheckConfig(TrainConfig):
    """kdtalker/configs/learning_check.yaml: the training config plus the held-out check."""

    check: CheckConfig = field(default_factory=CheckConfig)
