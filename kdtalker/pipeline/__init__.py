"""Inference: source crop, motion sampling glue, smoothing, keypoint composition, rendering, paste-back, mp4 output."""

from typing import Any

__all__ = ["Controls", "TalkingHeadPipeline"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so that the config schema (kdtalker.pipeline.config) is read without importing torch:
    # a mistyped command line is answered at once.
    if name in __all__:
        from kdtalker.pipeline import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
