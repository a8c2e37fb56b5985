"""The networks of a run, loaded once: renderer, audio encoder, denoiser, its sampler, the motion statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdtalker.audio import SpeechFeatures
from kdtalker.diffusion import Denoiser, MotionNorm, OneStepSampler
from kdtalker.errors import ConfigError


@dataclass
class Models:
    """Everything `TalkingHeadPipeline.load` builds; the renderer and the sampler are duck-typed (their APIs:
    LivePortraitRenderer's encode_source/render/stitch/keypoint_info, a scheduler's set_timesteps/step)."""

    renderer: Any
    audio: SpeechFeatures
    denoiser: Denoiser
    scheduler: Any
    norm: MotionNorm


def check_sampler(denoiser: Denoiser, scheduler: Any, path: Path) -> None:
    """A diffusion model needs a diffusion sampler, a one-pass generator (paper Table 4) the one-step sampler."""
    trained = getattr(denoiser, "trained_as", "diffusion")
    one_pass = isinstance(scheduler, OneStepSampler)
    if one_pass and trained == "diffusion":
        raise ConfigError(
            f"{path} is a diffusion model, but the sampler is the one-pass generators' (generator=vae|gan|vae_gan, "
            "diffusion=one_step): drop that override, or use the checkpoint folder of a model trained with it"
        )
    if not one_pass and trained != "diffusion":
        raise ConfigError(
            f"{path} is a generator={trained} model (paper Table 4): sample it with generator={trained} "
            f"(diffusion=one_step), not {type(scheduler).__name__}"
        )
