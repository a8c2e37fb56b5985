"""Types of the extraction config's keys (kdtalker/configs/extract.yaml holds their values and defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING


@dataclass
class ExtractConfig:
    """The top level of kdtalker/configs/extract.yaml; the audio group passes through."""

    videos: Optional[str] = MISSING
    mat_dir: Optional[str] = MISSING
    out: Optional[str] = MISSING
    checkpoint_dir: str = MISSING
    motion_extractor: str = MISSING
    wav2lip: str = MISSING
    device: str = MISSING
    fps: float = MISSING
    size: int = MISSING
    min_frames: int = MISSING
    batch_size: int = MISSING
    decode_workers: int = MISSING
    torch_threads: Optional[int] = MISSING
    shard: Optional[int] = MISSING
    num_shards: Optional[int] = MISSING
    syncnet: str = MISSING
    overwrite: bool = MISSING
