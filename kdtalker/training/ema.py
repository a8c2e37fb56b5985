"""Exponential moving average of the trainable parameters (torch_ema semantics, state as a named dict)."""

from __future__ import annotations

from copy import deepcopy

import torch
from torch import nn


class EMA:
    """Shadow copy of a model's trainable parameters.

    As torch_ema with use_num_updates (the official setting), the decay used for update n is
    min(decay, (1 + n) / (10 + n)), so early averages are not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.num_updates = 0
        self.shadow = {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow <- d shadow + (1 - d) param."""
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach().float(), 1.0 - d)

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """model.state_dict() with the averaged values in place of the trainable parameters."""
        state = model.state_dict()
        return {k: (self.shadow[k].to(v.dtype).clone() if k in self.shadow else v.clone()) for k, v in state.items()}

    def averaged_model(self, model: nn.Module) -> nn.Module:
        """A copy of `model` holding the averaged weights (what the checkpoint stores under 'model_ema')."""
        copy = deepcopy(model)
        copy.load_state_dict(self.model_state(model))
        return copy

    def load_model_state(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        """Restore from an averaged-model state dict (keys as model.state_dict()) and the update count."""
        self.num_updates = int(num_updates)
        for name in self.shadow:
            self.shadow[name].copy_(state[name])
