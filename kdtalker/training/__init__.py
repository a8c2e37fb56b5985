"""Training: the official optimiser/schedule recipe, EMA, checkpoints with exact resume, validation, the loop."""

from typing import Any

__all__ = ["TrainResult", "train"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so that the config schema (kdtalker.training.config) is read without importing torch.
    if name in __all__:
        from kdtalker.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
