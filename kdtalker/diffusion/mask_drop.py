"""Mask-drop: which signals a multi-signal training sample keeps (ACTalker's strategy, on keypoint regions).

Per sample, one draw u ~ U[0, 1) picks the signals: audio dropped (u < p_audio), motion dropped (next p_motion),
both dropped (next p_both: the unconditional model that classifier-free guidance needs), else both kept. Then
each motion region that is kept is dropped on its own with p_region, and the driving lips are masked whenever
the audio is kept, so that lips learn to come from the audio and the rest from the motion (no control conflict).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdtalker.diffusion.motion import REGIONS
from kdtalker.errors import ConfigError

LIPS = REGIONS.index("lips")


@dataclass(frozen=True)
class MaskDrop:
    """Drop probabilities (kdtalker/configs/train.yaml, train.mask_drop, says why each default is what it is)."""

    audio: float
    motion: float
    both: float
    region: float
    lips_from_audio: bool

    def __post_init__(self) -> None:
        for name in ("audio", "motion", "both", "region"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"train.mask_drop.{name}={value!r} must be a probability in [0, 1]")
        if self.audio + self.motion + self.both > 1:
            raise ConfigError(
                f"train.mask_drop.audio + motion + both = {self.audio + self.motion + self.both:g} exceeds 1"
            )

    def draw(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (audio kept (B,) 0/1, region mask (B, R) 0/1 over REGIONS), float32 on `device`."""
        where = generator.device if generator is not None else device
        u = torch.rand(batch, generator=generator, device=where)
        region_u = torch.rand(batch, len(REGIONS), generator=generator, device=where)
        drop_audio = (u < self.audio) | ((u >= self.audio + self.motion) & (u < self.audio + self.motion + self.both))
        drop_motion = (u >= self.audio) & (u < self.audio + self.motion + self.both)
        regions = (~drop_motion)[:, None] & (region_u >= self.region)
        if self.lips_from_audio:
            regions[:, LIPS] &= drop_audio
        return (~drop_audio).float().to(device), regions.float().to(device)
