"""The official optimiser recipe: AdamW with two weight-decay groups and linear warmup + cosine decay."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn


def param_groups(
    model: nn.Module, weight_decay: float, no_decay: Sequence[str] = ("bias", "LayerNorm.weight")
) -> list[dict]:
    """Trainable parameters split by name substring: names containing any of `no_decay` get weight decay 0.

    As in the official code this is a plain substring test, so the custom LayerNorm's gamma/beta are decayed
    and `time_rel_pos_bias.relative_attention_bias.weight` is not.
    """
    decay, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (plain if any(s in name for s in no_decay) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def build_optimizer(
    model: nn.Module,
    lr: float,
    betas: Sequence[float],
    eps: float,
    weight_decay: float,
    no_decay: Sequence[str],
    extra: nn.Module | None = None,
) -> torch.optim.AdamW:
    """AdamW over param_groups(model, weight_decay, no_decay), plus those of `extra` (a VAE encoder trained along)."""
    groups = param_groups(model, weight_decay, no_decay)
    if extra is not None:
        for group, more in zip(groups, param_groups(extra, weight_decay, no_decay)):
            group["params"] += more["params"]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def cosine_with_warmup(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR multiplier: step / warmup during warmup, then 0.5 (1 + cos(pi progress)) (transformers' "cosine")."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return factor
