"""The multi-signal denoiser: KDTalker driven by audio, by a driving motion, or by both, each gated to its regions.

ACTalker's idea (Hong et al. 2025: one control branch per driving signal, each branch gated and masked to its facial
region, trained with mask-drop) carried over to KDTalker's keypoint motion, where a region is a set of motion
channels: the lips (expression of LivePortrait's 6 lip keypoints), the eyes (its 5 eye keypoints), the rest of the
expression (the other 10 keypoints) and the head pose (yaw, pitch, roll, t).

Branches, summed into every ResnetBlock's modulation (the scale/shift the official audio already drives), and
into the projected input tokens (so that the driving motion meets the noisy motion x_t at the first layer):
    modulation_b = time_b + audio_b + W_b [ g_br m_r E_r(d_r) ]_r,    h_0 = P x + W_in [ g_0r m_r E_r(d_r) ]_r   (1)
- audio_b: the official audio branch, unchanged (same module names: KDTalker.pth loads into it);
- d_r: the region's channels of the per-frame driving motion (normalised like the sampled motion; the scale
  channel is not a driving signal) and their change since the window's first frame, E_r: the region's encoder
  (Linear, SiLU, Linear -> `motion_features`);
- m_r in {0, 1}: the region mask, whether the driving motion may act through region r (signals=audio: all 0;
  both: lips 0, the audio drives them; motion: all 1);
- g_br: a learned gate per block and region (init 1), the branch's strength (g_0r: at the input);
- W_b, W_in: bias-free Linears initialised to zero (ControlNet's zero convolution), so that at step 0 the
  model is the official one, and with every m_r = 0 the branch adds exactly nothing, trained or not.
Differences from ACTalker: keypoint motion instead of video latents, FiLM modulation of the transformer's blocks
instead of Mamba branches over spatio-temporal tokens, and regions as masks on the driving channels (a frame's
hidden state is shared by all 70 output channels, so "where a signal acts" is learned from mask-drop, not walled).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from kdtalker.diffusion.checkpoint import WHAT
from kdtalker.diffusion.denoiser import Denoiser
from kdtalker.diffusion.motion import MOTION_DIM, REGION_CHANNELS, REGIONS
from kdtalker.errors import ConfigError
from kdtalker.weights import load_state_strict

# Which regions the driving motion drives for each choice of signals: with both, the audio keeps the lips, as the
# model is trained (train.mask_drop.lips_from_audio).
SIGNAL_REGIONS = {"audio": (), "motion": REGIONS, "both": tuple(r for r in REGIONS if r != "lips")}
BRANCH = ("motion_encoders.", "motion_input.", "motion_modulation.", "region_gates")  # the motion branch's keys


def region_mask(regions: tuple[str, ...] | list[str]) -> torch.Tensor:
    """Region names -> the (R,) 0/1 mask over REGIONS (ConfigError for an unknown name)."""
    unknown = sorted(set(regions) - set(REGIONS))
    if unknown:
        raise ConfigError(f"unknown motion region(s) {unknown}; the regions are {list(REGIONS)}")
    return torch.tensor([float(r in regions) for r in REGIONS])


class MultiSignalDenoiser(Denoiser):
    """Denoiser + a gated motion branch (eq. 1); forward(x_t, t, audio, previous, canonical, driving=, regions=).

    Its `cond` (condition(...), the per-window cache) is (B, F, blocks + 1, 2 width): every block's modulation,
    then one slot whose first `width` channels are the input term W_in [...] of eq. (1).
    """

    signals = ("audio", "motion")

    def __init__(self, motion_features: int = 128, **denoiser_kwargs: Any):
        super().__init__(**denoiser_kwargs)  # the official modules first: same initialisation as the plain model
        if self.motion_dim != MOTION_DIM:
            raise ConfigError(f"the multi-signal model works on the {MOTION_DIM}-d motion, not {self.motion_dim}")
        self.motion_features = motion_features
        self.motion_encoders = nn.ModuleDict(
            {
                r: nn.Sequential(
                    nn.Linear(2 * len(REGION_CHANNELS[r]), motion_features),
                    nn.SiLU(),
                    nn.Linear(motion_features, motion_features),
                )
                for r in REGIONS
            }
        )
        blocks = len(self.resnet_blocks)
        self.motion_input = nn.Linear(len(REGIONS) * motion_features, self.width, bias=False)
        self.motion_modulation = nn.ModuleList(
            nn.Linear(len(REGIONS) * motion_features, 2 * self.width, bias=False) for _ in range(blocks)
        )
        for projection in (self.motion_input, *self.motion_modulation):
            nn.init.zeros_(projection.weight)
        self.region_gates = nn.Parameter(torch.ones(blocks + 1, len(REGIONS)))  # row 0: the input

    def motion_condition(self, driving: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """Driving motion (B, N, 70) normalised, region mask (B, R) or (B, N, R) -> the motion branch's share of
        the cond over [reference tokens | frames] (B, N + reference tokens, blocks + 1, 2 width)."""
        if driving.shape[-1] != MOTION_DIM:
            raise ValueError(f"the driving motion has {MOTION_DIM} channels, got shape {tuple(driving.shape)}")
        regions = regions.to(driving)
        mask = regions[:, None, :, None] if regions.ndim == 2 else regions[..., None]  # (B, N or 1, R, 1)
        # each encoder sees its channels and their change since the window's first frame: the within-window motion
        # is small next to the absolute level (which the reference token already carries) and learned faster so
        with_change = torch.stack([driving, driving - driving[:, :1]], dim=-1)  # (B, N, 70, 2)
        features = torch.stack(
            [self.motion_encoders[r](with_change[..., REGION_CHANNELS[r], :].flatten(-2)) for r in REGIONS], dim=2
        )
        features = features * mask  # a masked region contributes exactly zero, whatever its encoder's bias
        gated = features[:, :, None] * self.region_gates[None, None, :, :, None]  # (B, N, 1 + blocks, R, d)
        inputs = self.motion_input(gated[:, :, 0].flatten(-2))  # (B, N, width)
        slots = [w(gated[:, :, 1 + b].flatten(-2)) for b, w in enumerate(self.motion_modulation)]
        slots.append(torch.cat([inputs, torch.zeros_like(inputs)], dim=-1))
        cond = torch.stack(slots, dim=2)  # (B, N, blocks + 1, 2 width)
        front = cond.new_zeros(cond.shape[0], self.num_ref_tokens, *cond.shape[2:])
        return torch.cat([front, cond], dim=1)

    def context_condition(
        self, context: torch.Tensor, driving: torch.Tensor | None = None, regions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Padded audio context (B, F, 512) (zeros = no audio) [+ driving (B, N, 70) and its region mask] -> the cond
        (B, F, blocks + 1, 2 width) that is constant over the diffusion steps."""
        audio = self.audio_modulation(context)
        cond = torch.cat([audio, audio.new_zeros(*audio.shape[:2], 1, audio.shape[3])], dim=2)
        if driving is None:
            return cond
        if regions is None:
            raise ValueError("a driving motion needs its region mask (B, R) over REGIONS")
        if driving.shape[1] + self.num_ref_tokens != context.shape[1]:
            raise ValueError(f"the driving motion has {driving.shape[1]} frames, the audio {context.shape[1]} tokens")
        return cond + self.motion_condition(driving.to(cond.dtype), regions)

    def denoise_condition(self, tokens: torch.Tensor, time: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The cond's last slot carries the input term of eq. (1); the others are the blocks' modulations."""
        modulation, inputs = cond[:, :, :-1], cond[:, :, -1, : self.width]
        return self.denoise(tokens, time + modulation, inputs)

    @property
    def motion_branch_trained(self) -> bool:
        """False while every motion projection is still zero (e.g. the official KDTalker.pth loaded): the driving
        motion then changes nothing."""
        return any(bool(w.weight.detach().any()) for w in (self.motion_input, *self.motion_modulation))

    def load_state(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        """Strict load; a checkpoint without any motion-branch entry (the official KDTalker.pth) leaves the branch
        at its initial values (zero projections: the model then is the official one)."""
        own = self.state_dict()
        branch = [k for k in own if k.startswith(BRANCH)]
        if not any(k in state for k in branch):
            state = {**state, **{k: own[k] for k in branch}}
        load_state_strict(self, state, WHAT, source)
