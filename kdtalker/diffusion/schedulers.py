"""Noise schedule and the DDPM / DDIM samplers as small scheduler objects (set_timesteps / step / add_noise).

The arithmetic follows diffusers 0.10.2 (the version the official code pins) operation by operation on float32
tensors: 1 - alpha_bar is formed in float32, which loses accuracy at small t (1 - alpha_bar_0 = 1.001358e-05, not
1e-05), and reproducing that is what makes the official step numbers come out bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kdtalker.errors import ConfigError


@dataclass
class SchedulerOutput:
    """One reverse step: x_{t-1} and the x_0 estimate it was built from."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def gaussian_like(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) of `shape` drawn from `generator` on its own device (else like's), in like's dtype, on like's device."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


class NoiseSchedule:
    """Linear betas (float32 linspace), alpha_bar = float32 cumprod(1 - beta); the forward process q(x_t | x_0)."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-5,
        beta_end: float = 8e-3,
        beta_schedule: str = "linear",
    ):
        if beta_schedule != "linear":
            raise ConfigError(
                f"diffusion.beta_schedule={beta_schedule!r}: only 'linear' (the official schedule) is implemented"
            )
        if num_train_timesteps < 1:
            raise ConfigError(f"diffusion.num_train_timesteps={num_train_timesteps} must be positive")
        self.num_train_timesteps = num_train_timesteps
        self.betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.num_inference_steps = 0  # set_timesteps chooses them, per run (the `steps` setting)
        self.timesteps = torch.empty(0, dtype=torch.long)
        self._alphas_cumprod_on: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def alphas_cumprod_on(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """alpha_bar (T,) on `device` in `dtype`, copied there once: add_noise runs in every training step and every
        inpainting step, and a copy from host memory each time would wait for the device."""
        key = (torch.device(device), dtype)
        if key not in self._alphas_cumprod_on:
            self._alphas_cumprod_on[key] = self.alphas_cumprod.to(device=device, dtype=dtype)
        return self._alphas_cumprod_on[key]

    def _check_steps(self, num_inference_steps: int) -> int:
        steps = int(num_inference_steps)
        if not 1 <= steps <= self.num_train_timesteps:
            raise ConfigError(
                f"steps={steps} must be between 1 and diffusion.num_train_timesteps={self.num_train_timesteps}"
            )
        return steps

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_0 (B, ...), epsilon (B, ...), t (B,) -> x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) epsilon."""
        abar = self.alphas_cumprod_on(original.device, original.dtype)[timesteps.to(original.device)]
        shape = (-1,) + (1,) * (original.ndim - 1)
        sqrt_abar = (abar**0.5).reshape(shape)
        sqrt_one_minus = ((1 - abar) ** 0.5).reshape(shape)
        return sqrt_abar * original + sqrt_one_minus * noise

    def _leading_timesteps(self, steps: int) -> torch.Tensor:
        ratio = self.num_train_timesteps // steps
        return torch.from_numpy((np.arange(steps) * ratio).round()[::-1].copy().astype(np.int64))


class DDIMScheduler(NoiseSchedule):
    """DDIM (eta = 0: deterministic). Timesteps are 'leading': (0, r, 2r, ...) reversed, r = T // steps."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-5,
        beta_end: float = 8e-3,
        beta_schedule: str = "linear",
        eta: float = 0.0,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
    ):
        super().__init__(num_train_timesteps, beta_start, beta_end, beta_schedule)
        self.eta = eta
        self.steps_offset = steps_offset
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Choose the number of sampling steps -> timesteps (steps,) int64, descending."""
        steps = self._check_steps(num_inference_steps)
        self.num_inference_steps = steps
        self.timesteps = self._leading_timesteps(steps) + self.steps_offset
        return self.timesteps

    def adds_noise(self, timestep: int) -> bool:
        """Whether step() draws variance noise (eta > 0)."""
        return self.eta > 0

    def _variance(self, abar_t: torch.Tensor, abar_prev: torch.Tensor) -> torch.Tensor:
        return (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
    ) -> SchedulerOutput:
        """epsilon (B, ...), t, x_t (B, ...) -> x_prev with prev = t - T // steps (alpha_bar_prev = 1 past 0)."""
        eta = self.eta if eta is None else eta
        t = int(timestep)
        prev = t - self.num_train_timesteps // self.num_inference_steps
        abar_t = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod
        beta_prod_t = 1 - abar_t
        pred_x0 = (sample - beta_prod_t**0.5 * model_output) / abar_t**0.5
        std_dev_t = eta * self._variance(abar_t, abar_prev) ** 0.5
        direction = (1 - abar_prev - std_dev_t**2) ** 0.5 * model_output
        prev_sample = abar_prev**0.5 * pred_x0 + direction
        if eta > 0:
            if variance_noise is None:
                variance_noise = gaussian_like(model_output.shape, model_output, generator)
            prev_sample = prev_sample + self._variance(abar_t, abar_prev) ** 0.5 * eta * variance_noise
        return SchedulerOutput(prev_sample, pred_x0)


class DDPMScheduler(NoiseSchedule):
    """Ancestral DDPM with the 'fixed_small' variance.

    As in diffusers 0.10.2, the previous alpha_bar is read at t - 1 even when fewer than T steps are taken (the
    official `forward_sample(scheduler='ddpm')` path); timesteps are arange(0, T, T // steps) reversed.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-5,
        beta_end: float = 8e-3,
        beta_schedule: str = "linear",
    ):
        super().__init__(num_train_timesteps, beta_start, beta_end, beta_schedule)
        self.one = torch.tensor(1.0)

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Choose the number of sampling steps -> timesteps int64, descending."""
        steps = self._check_steps(num_inference_steps)
        self.num_inference_steps = steps
        ratio = self.num_train_timesteps // steps
        self.timesteps = torch.from_numpy(np.arange(0, self.num_train_timesteps, ratio)[::-1].copy().astype(np.int64))
        return self.timesteps

    def adds_noise(self, timestep: int) -> bool:
        """Whether step() draws variance noise (every step but the last, t = 0)."""
        return int(timestep) > 0

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
    ) -> SchedulerOutput:
        """epsilon (B, ...), t, x_t (B, ...) -> x_prev = posterior mean + sigma_t z (z drawn only for t > 0)."""
        t = int(timestep)
        abar_t = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[t - 1] if t > 0 else self.one
        beta_prod_t = 1 - abar_t
        beta_prod_prev = 1 - abar_prev
        pred_x0 = (sample - beta_prod_t**0.5 * model_output) / abar_t**0.5
        x0_coeff = (abar_prev**0.5 * self.betas[t]) / beta_prod_t
        xt_coeff = self.alphas[t] ** 0.5 * beta_prod_prev / beta_prod_t
        prev_sample = x0_coeff * pred_x0 + xt_coeff * sample
        if t > 0:
            if variance_noise is None:
                variance_noise = gaussian_like(model_output.shape, model_output, generator)
            variance = torch.clamp((1 - abar_prev) / (1 - abar_t) * self.betas[t], min=1e-20)
            prev_sample = prev_sample + variance**0.5 * variance_noise
        return SchedulerOutput(prev_sample, pred_x0)


class OneStepSampler:
    """The sampler of a one-pass generator (paper Table 4: VAE, GAN, VAE+GAN on the denoiser network).

    The network keeps its diffusion inputs: x_T ~ N(0, I) is the latent z, the time input is fixed at `timestep`
    (T - 1, where a diffusion model starts from pure noise), and its output is the motion itself, so one `step`
    returns the network output as the sample. The step count is ignored: there is exactly one.
    """

    def __init__(self, timestep: int = 999):
        if timestep < 0:
            raise ConfigError(f"diffusion.timestep={timestep} must be >= 0")
        self.timestep = int(timestep)
        self.num_inference_steps = 1
        self.timesteps = torch.tensor([self.timestep], dtype=torch.long)

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """The single timestep (1,) int64, whatever the requested count."""
        return self.timesteps

    def adds_noise(self, timestep: int) -> bool:
        """Never: the generator's only randomness is its latent x_T."""
        return False

    def step(
        self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor, **_
    ) -> SchedulerOutput:
        """network output (B, ...) -> the sample itself (prev_sample = pred_original_sample = model_output)."""
        return SchedulerOutput(model_output, model_output)
