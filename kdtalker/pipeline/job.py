"""A run's prepared inputs (`Job`): what the render loop consumes once the request's files are read."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from kdtalker.audio import SAMPLE_RATE, load_audio, num_video_frames
from kdtalker.pipeline.controls import Controls
from kdtalker.pipeline.motion_file import MotionRecord
from kdtalker.pipeline.paste import PasteBack
from kdtalker.pipeline.request import Request
from kdtalker.renderer import Source


@dataclass
class Job:
    """One run's prepared inputs: its request, the encoded source, audio features (T, 512), the signals (T, ...)."""

    request: Request
    source: Source
    features: torch.Tensor | None
    num_frames: int
    paste: PasteBack | None
    width: int
    height: int
    given_motion: torch.Tensor | None = None  # (T, 70) from motion_file: rendered as it is
    video_motion: torch.Tensor | None = None  # (T, 70) the driving video's relative motion on the source
    pose_track: torch.Tensor | None = None  # (T, 6) a pose file's angles + translation
    speech: np.ndarray | None = None  # (T,) bool: the voice-activity detector's speech frames (silence on)
    record: MotionRecord | None = field(init=False)  # what was rendered, when the request saves the motion

    def __post_init__(self) -> None:
        self.record = MotionRecord() if self.request.records_motion else None

    @property
    def controls(self) -> Controls:
        """The run's resolved controls."""
        return self.request.controls

    def keep(self, motion: torch.Tensor, x_d: torch.Tensor) -> None:
        """Record a rendered piece, motion (n, 70) and x_d (n, 21, 3), on the host: only when save_motion asks."""
        if self.record is not None:
            self.record.keep(motion, x_d)


def read_speech(path: str | os.PathLike, fps: float) -> tuple[np.ndarray, int]:
    """The speech as the model hears it (16 kHz mono), cut to the sound of exactly its video frames -> (wav, T)."""
    wav = load_audio(path, SAMPLE_RATE, fps=fps)
    num_frames = num_video_frames(len(wav), SAMPLE_RATE, fps)
    return wav[: int(num_frames * SAMPLE_RATE / fps)], num_frames
