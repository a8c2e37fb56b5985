"""Live sessions: speech pushed as it is spoken -> motion (and rendered frames) a fraction of a second later.

    push(samples) --StreamingSpeechFeatures--> final feature rows --LiveSampler (hop H)--> normalised frames
      --denormalise, StreamingSmoother (fixed lag), head-motion scale, control mix--> motion rows (n, 70)
      --silence on: lips eased in the pauses (StreamingVad -> StreamingPauseWeights, silence.py)--> motion rows
      --driving keypoints, render batches--> uint8 frames

Each stage hands on only what no later sample can change, with the offline run's arithmetic, so the pieces of a
session together are `TalkingHeadPipeline.motion` of the same audio (the sampler draws the same noise in the same
order; the Kalman smoother's lag and the audio front end's look-ahead are the exact whole-clip results).
The one difference is the audio encoder's batches (kdtalker/audio/streaming.py): a feature can move by a few
float32 ulps, see `LiveSession` and README "Live". `close()` is the end of the file: the last windows are padded
as offline and the smoother's last frames are smoothed as the clip's last.

Where a frame waits (README "Live"): the mel window's look-ahead (120 ms at 25 fps), the rest of its sampling
window (up to H - 1 frames), the smoother's lag (11 frames with the official settings); then its window's
sampling and its own rendering. Memory does not grow with the stream: every stage holds a bounded buffer
(`buffered`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdtalker.audio.streaming import StreamingSpeechFeatures
from kdtalker.diffusion.live import LiveSampler
from kdtalker.errors import ConfigError, KDTalkerError
from kdtalker.pipeline.compose import driving_keypoints
from kdtalker.pipeline.control import mix_motion
from kdtalker.pipeline.controls import Controls
from kdtalker.pipeline.frames import finish_batch, render_batch
from kdtalker.pipeline.motion import MotionRows, broken_motion
from kdtalker.pipeline.paste import PasteBack
from kdtalker.pipeline.silence import LiveQuietLips
from kdtalker.pipeline.timings import Timings
from kdtalker.pipeline.weights import renderer_weights
from kdtalker.renderer import Source


class LiveError(KDTalkerError):
    """A live session was used wrongly (pushed to after close)."""


@dataclass(frozen=True)
class LivePiece:
    """Consecutive frames of a live session: frame `first + k` is row k of each field."""

    first: int
    motion: torch.Tensor  # (n, 70) float32 raw motion [scale, yaw, pitch, roll, t(3), exp(63)], what is rendered
    frames: np.ndarray | None  # (n, H, W, 3) uint8 RGB; None when the session does not render
    times: np.ndarray  # (n,) float64 seconds: the audio time of each frame, frame i at i / fps

    def __len__(self) -> int:
        return self.motion.shape[0]


def check_live_controls(ctl: Controls) -> Controls:
    """ConfigError for controls a live session cannot follow (they need the whole clip or another file)."""
    if ctl.keyframes:
        raise ConfigError("keyframes need the clip's length: a live session takes none (keyframes=null)")
    if ctl.uses_motion:
        raise ConfigError(f"signals={ctl.signals} needs a driving video: a live session follows the audio only")
    for signal in ("video", "file"):
        if ctl.control.uses(signal):
            raise ConfigError(
                f"control.* asks for the {signal} signal: a live session has only the audio "
                "(and the source: control.pose=still, control.eyes=source, control.expression=source)"
            )
    return ctl


def live_silence(ctl: Controls, raw_source: torch.Tensor) -> LiveQuietLips | None:
    """The session's silence stage when the controls turn it on (as the offline run decides: detector set, the lips
    following the audio), else None."""
    if not (ctl.silence.enabled and ctl.uses_audio and ctl.control.lips == "audio"):
        return None
    return LiveQuietLips(ctl.silence, ctl.fps, raw_source, ctl.motion_mode == "relative")


class LiveSession:
    """One speaker's stream: `push(samples)` -> pieces that became ready, `close()` -> the tail (`LivePiece`s).

    Built by `TalkingHeadPipeline.live`. Runs in the caller's thread (no worker to stop): dropping the session,
    `close()` or `release()` frees everything it holds. As a context manager (`with pipe.live(img) as s:`) the
    block's end releases it; call close() inside for the tail.
    """

    def __init__(
        self,
        *,
        speech: StreamingSpeechFeatures,
        sampler: LiveSampler,
        rows: MotionRows,
        controls: Controls,
        source: Source,
        raw_source: torch.Tensor,
        renderer: Any | None,
        size: tuple[int, int],
        paste: PasteBack | None,
        checkpoint_dir: Path,
        timings: Timings,
        quiet: LiveQuietLips | None,
    ):
        self.controls = controls
        self.fps = controls.fps
        self.timings = timings
        self._speech, self._sampler, self._rows = speech, sampler, rows
        self._source, self._raw_source, self._renderer = source, raw_source, renderer
        self._size, self._paste, self._checkpoint_dir = size, paste, checkpoint_dir
        self._weights = renderer_weights(checkpoint_dir)  # what a broken frame's error names (LivePortrait only)
        self._quiet = quiet  # silence on: the lips eased in the speech's pauses (silence.py), as offline
        self._first_row: torch.Tensor | None = None  # frame 0's motion (relative mode measures from it)
        self._frames_out = 0
        self._closed = False

    @property
    def renders(self) -> bool:
        """Whether pieces carry frames (render=True) or motion only."""
        return self._renderer is not None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames: 512x512, or the source image's (even) size with paste_back."""
        return self._size

    @property
    def frames_out(self) -> int:
        """Frames handed out so far."""
        return self._frames_out

    @property
    def closed(self) -> bool:
        """Whether close() (or a release) ended the session."""
        return self._closed

    @property
    def buffered(self) -> dict[str, int]:
        """What each stage holds between pushes: audio samples and mel frames, feature rows, motion rows."""
        windows = self._speech.windows
        return {
            "samples": windows.buffered_samples,
            "mel_frames": windows.buffered_mel_frames,
            "feature_rows": self._sampler.buffered_rows,
            "smoother_rows": self._rows.smoother.buffered_rows,
            "silence_rows": 0 if self._quiet is None else self._quiet.buffered_rows + self._quiet.pauses.buffered,
        }

    def push(self, samples: np.ndarray) -> list[LivePiece]:
        """(N,) float32 mono 16 kHz samples, any N >= 0 -> the pieces that became final (maybe none)."""
        if self._closed:
            raise LiveError("this live session is closed: push() after close(); start a new session")
        with self.timings.stage("audio"):
            features = self._speech.push(samples).values  # a bad chunk: AudioError, and the session is unchanged
        try:
            if self._quiet is not None:
                with self.timings.stage("audio"):
                    self._quiet.hear(samples)
            with self.timings.stage("sampling"):
                made = self._sampler.push(features)
            return self._pieces(made, end=False)
        except BaseException:
            self.release()
            raise

    def close(self) -> list[LivePiece]:
        """The end of the speech -> the last pieces, the end treated as the offline run treats the end of the file."""
        if self._closed:
            raise LiveError("this live session is already closed")
        try:
            with self.timings.stage("audio"):
                features = self._speech.close().values
                if self._quiet is not None:
                    self._quiet.hear_end()
            with self.timings.stage("sampling"):
                made = torch.cat([self._sampler.push(features), self._sampler.close()])
            return self._pieces(made, end=True)
        finally:
            self.release()

    def release(self) -> None:
        """Drop every buffer and model reference now (close() does it; also after an error)."""
        self._closed = True
        self._speech = self._sampler = self._rows = self._renderer = None
        self._source = self._paste = self._first_row = self._quiet = None

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.release()  # the tail is close()'s to hand out; a block left without it wants none

    def _pieces(self, made: torch.Tensor, end: bool) -> list[LivePiece]:
        """Normalised frames (m, 70) -> pieces of final motion (and frames): the offline post-processing, in order."""
        motion = self._motion_rows(made, end)
        if not len(motion):
            return []
        if self._renderer is None:
            return [self._piece(motion, None)]
        ctl, size = self.controls, max(1, self.controls.batch_size)
        pieces = []
        for start in range(0, len(motion), size):
            rows = motion[start : start + size]
            with self.timings.stage("sampling"):
                x_d = driving_keypoints(self._source.info, rows, mode=ctl.motion_mode, first=self._first_row)
                if not torch.isfinite(x_d).all():
                    raise broken_motion("driving keypoints", self._checkpoint_dir)
            with self.timings.stage("rendering"), torch.inference_mode():
                rendered = render_batch(self._renderer, self._source, x_d, self._frames_out, ctl, self._paste)
            with self.timings.stage("writing"):
                frames = finish_batch(rendered, *self._size, self._weights)
            pieces.append(self._piece(rows, frames))
        return pieces

    def _motion_rows(self, made: torch.Tensor, end: bool) -> torch.Tensor:
        """As MotionMaker.pieces + controlled: the offline post-processing (MotionRows), then the control mix."""
        ctl = self.controls
        with self.timings.stage("sampling"):
            rows = self._rows.push(made)
            if end:
                rows = torch.cat([rows, self._rows.finish()])
            if not ctl.control.is_audio_only and len(rows):
                rows = mix_motion(ctl.control, self._raw_source, audio=rows)
            if self._quiet is not None:
                rows = self._quiet.ease(rows)
        if self._first_row is None and len(rows):
            self._first_row = rows[:1].clone()
        return rows

    def _piece(self, motion: torch.Tensor, frames: np.ndarray | None) -> LivePiece:
        first = self._frames_out
        self._frames_out += len(motion)
        times = np.arange(first, first + len(motion), dtype=np.float64) / self.fps
        return LivePiece(first, motion.cpu(), frames, times)
