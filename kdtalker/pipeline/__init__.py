"""Inference: source crop, motion sampling glue, smoothing, keypoint composition, rendering, paste-back, mp4 output."""

from typing import Any

__all__ = ["Controls", "TalkingHeadPipeline"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so that the config schema (kdtalker.pipeline.config) is read without importing torch:
    # a mistyped command line is answered at once.
    if name == "Controls":
        from kdtalker.pipeline.controls import Controls

        return Controls
    if name == "TalkingHeadPipeline":
        from kdtalker.pipeline.pipeline import TalkingHeadPipeline

        return TalkingHeadPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
