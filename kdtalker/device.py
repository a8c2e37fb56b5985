"""Device and dtype resolution from config strings; the only place that looks for CUDA."""

from __future__ import annotations

import torch

from kdtalker.errors import ConfigError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available else CPU; anything else is passed to torch.device."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device={name!r} is not a device name (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={name!r} was asked for but CUDA is not available here; use device=cpu or device=auto"
        )
    return device


def resolve_dtype(name: str | torch.dtype = "float32") -> torch.dtype:
    """'float32' | 'float16' | 'bfloat16' | 'float64' -> torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise ConfigError(f"dtype={name!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[name]
