"""Inference: source crop, motion sampling glue, smoothing, keypoint composition, rendering, paste-back, mp4 output."""

from kdtalker.pipeline.pipeline import Controls, TalkingHeadPipeline

__all__ = ["Controls", "TalkingHeadPipeline"]
