"""Keypoint diffusion: motion layout and normalisation, the denoiser, noise schedulers, loss and sampling."""

from kdtalker.diffusion.checkpoint import kdtalker_state_dict
from kdtalker.diffusion.denoiser import Denoiser, load_kdtalker, save_kdtalker
from kdtalker.diffusion.guidance import NO_GUIDANCE, Guidance
from kdtalker.diffusion.loss import augment_context, diffusion_loss
from kdtalker.diffusion.mask_drop import MaskDrop
from kdtalker.diffusion.motion import (
    ANGLES,
    EXPRESSION,
    MOTION_DIM,
    MOTION_LAYOUT,
    POSE,
    REGION_CHANNELS,
    REGIONS,
    SCALE,
    TRANSLATION,
    MotionNorm,
    expression_channels,
    pack_motion,
    unpack_motion,
)
from kdtalker.diffusion.multisignal import MultiSignalDenoiser, region_mask
from kdtalker.diffusion.sampling import Known, initial_noise, padded_audio, sample_motion, sample_window
from kdtalker.diffusion.schedulers import DDIMScheduler, DDPMScheduler, NoiseSchedule, OneStepSampler, SchedulerOutput

__all__ = [
    "ANGLES",
    "EXPRESSION",
    "POSE",
    "SCALE",
    "TRANSLATION",
    "DDIMScheduler",
    "DDPMScheduler",
    "Denoiser",
    "Guidance",
    "NO_GUIDANCE",
    "MaskDrop",
    "MultiSignalDenoiser",
    "REGIONS",
    "REGION_CHANNELS",
    "MOTION_DIM",
    "MOTION_LAYOUT",
    "MotionNorm",
    "NoiseSchedule",
    "OneStepSampler",
    "SchedulerOutput",
    "augment_context",
    "diffusion_loss",
    "initial_noise",
    "Known",
    "kdtalker_state_dict",
    "load_kdtalker",
    "expression_channels",
    "pack_motion",
    "region_mask",
    "padded_audio",
    "sample_motion",
    "sample_window",
    "save_kdtalker",
    "unpack_motion",
]
