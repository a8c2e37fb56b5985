"""Training objective: epsilon-prediction MSE on 64-frame windows, with the official audio-feature augmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtalker.diffusion.denoiser import Denoiser
from kdtalker.diffusion.mask_drop import MaskDrop
from kdtalker.diffusion.motion import EXPRESSION, MOTION_DIM, POSE
from kdtalker.diffusion.schedulers import NoiseSchedule


def augment_context(context: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Context (B, F, 512) + (z std + mean), with the scalar mean and unbiased std of the whole zero-padded context.

    This is the official augmentation: noise N(mean, std) is added, so it also shifts the features by +mean.
    """
    mean, std = context.mean(), context.std()
    return context + (z * std + mean)


def augmented_context(
    model: Denoiser | torch.nn.Module,
    audio: torch.Tensor,
    audio_noise_prob: float,
    generator: torch.Generator | None,
    audio_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Audio (B, N, 512) -> the padded context (B, F, 512), augmented with probability `audio_noise_prob` (one coin
    per batch, then z (B, F, 512) drawn; a given `audio_noise` z forces the augmentation)."""
    # The padded context (zero audio on the reference tokens) is built here because the official augmentation
    # acts on all of it; `model` may be DistributedDataParallel around the Denoiser, whose forward does the rest.
    context = getattr(model, "module", model).context(audio)
    if audio_noise is None and audio_noise_prob > 0:
        device = generator.device if generator else audio.device
        if torch.rand(1, generator=generator, device=device).item() > 1 - audio_noise_prob:
            audio_noise = torch.randn(context.shape, generator=generator, device=device)
    if audio_noise is not None:
        context = augment_context(context, audio_noise.to(context))
    return context


def diffusion_loss(
    model: Denoiser | torch.nn.Module,
    scheduler: NoiseSchedule,
    x0: torch.Tensor,
    ref: torch.Tensor,
    ori: torch.Tensor | None,
    audio: torch.Tensor,
    *,
    audio_noise_prob: float = 0.0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    timesteps: torch.Tensor | None = None,
    audio_noise: torch.Tensor | None = None,
    mask_drop: MaskDrop | None = None,
    signals: tuple[torch.Tensor, torch.Tensor] | None = None,
    split: tuple[slice, slice] | None = None,
) -> dict[str, torch.Tensor]:
    """x0 (B, N, D), ref (B, D), ori (B, D), audio (B, N, 512) -> dict(loss, loss_pose, loss_exp); D = 70 officially.

    Draws (in the official order) epsilon, t ~ U{0..T-1}, then one coin per batch: with probability
    `audio_noise_prob` (0.7 in official training, 0 for validation) the context is augmented. `noise`,
    `timesteps` and `audio_noise` (a standard-normal z (B, F, 512); giving it forces the augmentation) replace
    the draws. Only `loss` (all 70 channels) is optimised; the other two are for logging.

    A multi-signal model is driven by the window's own motion x0 as its driving motion: `mask_drop` draws per
    sample (after the draws above, so a plain model's streams are unchanged) which signals it keeps; `signals` =
    (audio kept (B,), regions (B, R)) gives them instead. A dropped audio is zero context, after augmentation.

    `split` = the (pose, expression) channels of the two logged terms in the motion's layout (a renderer's
    `layout.span("yaw", "t"), layout.slice("exp")`); None: the official 70-d layout's.
    """
    b = x0.shape[0]
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator else x0.device)
        noise = noise.to(x0)
    if timesteps is None:
        device = generator.device if generator else x0.device
        timesteps = torch.randint(0, scheduler.num_train_timesteps, (b,), generator=generator, device=device)
    timesteps = timesteps.to(x0.device)
    x_t = scheduler.add_noise(x0, noise, timesteps)
    context = augmented_context(model, audio, audio_noise_prob, generator, audio_noise)
    if signals is None and mask_drop is not None:
        signals = mask_drop.draw(b, generator, x0.device)
    if signals is None:
        eps = model(x_t, timesteps, context, ref, ori)  # the padded (possibly augmented) context as the audio
    else:
        keep_audio, regions = (s.to(x0) for s in signals)
        context = context * keep_audio[:, None, None]
        eps = model(x_t, timesteps, context, ref, ori, driving=x0, regions=regions)
    pose, expression = split_channels(split, x0.shape[-1])
    return {
        "loss": F.mse_loss(eps, noise),
        "loss_pose": F.mse_loss(eps[..., pose], noise[..., pose]),
        "loss_exp": F.mse_loss(eps[..., expression], noise[..., expression]),
    }


def split_channels(split: tuple[slice, slice] | None, dim: int) -> tuple[slice, slice]:
    """The (pose, expression) channels of the logged loss terms; ValueError when None is given for a non-official D."""
    if split is not None:
        return split
    if dim != MOTION_DIM:  # the official channel split would cut another layout's vector in the wrong places
        raise ValueError(f"a {dim}-d motion needs its layout's (pose, expression) split for the logged loss terms")
    return POSE, EXPRESSION
