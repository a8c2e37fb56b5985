"""Shared helpers of the eval tests (no tests here): fixture weights for our own evaluation networks."""

import math

import torch
from fixture_weights import fixture_state_dict


def own_spec(model: torch.nn.Module) -> dict:
    """Key -> shape listing of a module (BN counters left out, as in the official files)."""
    return {
        "shapes": {k: list(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    }


def deep_fixture_weights(model: torch.nn.Module, salt: str) -> dict[str, torch.Tensor]:
    """Fixture weights with conv kernels scaled by sqrt(2) (He gain) so that deep ReLU nets (Inception, ResNet-50)
    keep O(1) activations instead of decaying into slow float32 denormals."""
    state = fixture_state_dict(own_spec(model), salt)
    return {k: (v * math.sqrt(2) if v.dim() == 4 else v) for k, v in state.items()}
