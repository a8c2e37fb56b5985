"""Types of the export config's keys (kdtalker/configs/export_checkpoint.yaml holds their values and defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING


@dataclass
class ExportConfig:
    """The top level of kdtalker/configs/export_checkpoint.yaml."""

    run: str = MISSING  # a training run's out_dir (checkpoint-XXXXXX.pth + config.yaml)
    step: Optional[int] = MISSING  # which checkpoint; null = the newest
    ema: bool = MISSING  # export the EMA weights instead of the trained ones
    base: str = MISSING  # the official weight folder the other files are taken from
    out: Optional[str] = MISSING  # the checkpoint folder to write
    link: bool = MISSING  # symlink the base files (false: copy them)
    overwrite: bool = MISSING  # replace an existing, non-empty out folder
