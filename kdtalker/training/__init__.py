"""Training: the official optimiser/schedule recipe, EMA, checkpoints with exact resume, validation, the loop."""

from kdtalker.training.trainer import TrainResult, train

__all__ = ["TrainResult", "train"]
