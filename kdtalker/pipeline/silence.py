"""Silence: while the speech pauses, the lips of the motion ease to a neutral mouth; pose, eyes and the rest move on.

A voice-activity detector (kdtalker.audio.vad) marks each video frame speech or not. Pauses shorter than
`min_pause` seconds count as speech (the lips keep moving between words). In a pause, the lip channels (the
expression offsets of LivePortrait's lip keypoints 6, 12, 14, 17, 19, 20) are blended towards the neutral mouth
with a weight w: 1 = as sampled, 0 = neutral. w falls from 1 to 0 along a raised cosine over the `ramp` seconds
after the speech stops and rises again over the `ramp` seconds before it starts: the ramps lie inside the pause,
so every speech frame keeps its sampled motion bit for bit, and a pause shorter than two ramps only dips. A pause
at the start or end of the clip needs no ramp on that side (no speech to come from or go to).

Neutral mouths (`neutral`):
- source: the source image's own lip offsets (its mouth as photographed, open or not);
- closed: the source's lips with the mouth opening removed. The opening is the coordinate of the lip offsets along
  the direction LivePortrait's "lip close <-> open" expression edit moves them (keypoint 19 y by 1, 19 z by 0.1,
  17 y by -0.1, in its units of 1e-3): positive = more open than the canonical (expression-free) mouth. `closed`
  sets a positive opening to 0 and keeps the rest of the source's lip shape; a source mouth already closed further
  than canonical is kept as it is.

Relative motion (motion_mode=relative) renders lips as source + (m_i - m_0): frame 0 is the reference, so it keeps
its sampled lips (it counts as speech) and the neutral is put in the motion as m_0 + (neutral - source).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from kdtalker.audio.vad import StreamingVad
from kdtalker.diffusion.motion import EXPRESSION, REGION_CHANNELS
from kdtalker.errors import ConfigError

DETECTORS = ("none", "silero", "webrtc")
NEUTRALS = ("source", "closed")
LIP_CHANNELS = REGION_CHANNELS["lips"]  # 18 motion channels: x, y, z of each lip keypoint
# LivePortrait's "lip close <-> open" edit: (keypoint, axis) -> its step per unit, here in units of 1e-3.
LIP_OPEN_EDIT = {(19, 1): 1.0, (19, 2): 0.1, (17, 1): -0.1}


def lip_open_direction() -> torch.Tensor:
    """(18,) unit vector over LIP_CHANNELS along which the mouth opens (LIP_OPEN_EDIT, normalised)."""
    v = torch.zeros(len(LIP_CHANNELS), dtype=torch.float64)
    for (keypoint, axis), step in LIP_OPEN_EDIT.items():
        v[LIP_CHANNELS.index(EXPRESSION.start + 3 * keypoint + axis)] = step
    return v / v.norm()


def mouth_opening(motion: torch.Tensor) -> torch.Tensor:
    """Raw motion (..., 70) -> (...,) the mouth opening: lip offsets along `lip_open_direction` (0 = canonical)."""
    v = lip_open_direction().to(motion.device)
    return motion[..., LIP_CHANNELS].double() @ v


@dataclass(frozen=True)
class Silence:
    """The inference config's `silence` node: how pauses in the speech are found and what the lips do in them."""

    detector: str  # none (official: lips always as sampled) | silero | webrtc
    threshold: float  # a frame is speech when its speech probability is >= this
    aggressiveness: int  # webrtc only: 0..3, higher calls more audio non-speech
    min_pause: float  # seconds: shorter pauses count as speech
    ramp: float  # seconds of raised-cosine easing at each end of a pause (inside it)
    neutral: str  # source | closed (module doc)

    def validate(self) -> "Silence":
        """ConfigError for an unknown detector or neutral, or a number out of range; returns self."""

        def number(value: object) -> bool:
            return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

        checks = [
            (self.detector in DETECTORS, f"silence.detector={self.detector!r} is not one of {DETECTORS}"),
            (self.neutral in NEUTRALS, f"silence.neutral={self.neutral!r} is not one of {NEUTRALS}"),
            (
                number(self.threshold) and 0 <= self.threshold <= 1,
                f"silence.threshold={self.threshold!r} must be in [0, 1]",
            ),
            (
                not isinstance(self.aggressiveness, bool) and self.aggressiveness in (0, 1, 2, 3),
                f"silence.aggressiveness={self.aggressiveness!r} must be 0, 1, 2 or 3",
            ),
            (number(self.min_pause) and self.min_pause >= 0, f"silence.min_pause={self.min_pause!r} must be >= 0 s"),
            (number(self.ramp) and self.ramp >= 0, f"silence.ramp={self.ramp!r} must be >= 0 s"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    @property
    def enabled(self) -> bool:
        """Whether pauses are detected at all (detector other than none)."""
        return self.detector != "none"


def pause_weights(speech: np.ndarray, min_pause_frames: int, ramp_frames: int) -> np.ndarray:
    """(T,) bool speech flags -> (T,) float64 lip weights: 1 = as sampled (speech), 0 = neutral (deep in a pause).

    A pause frame at distance d frames from the nearest speech frame (d = 1 next to it) gets
    0.5 (1 + cos(pi d / (R + 1))) for d <= R = ramp_frames, 0 beyond: R frames strictly between 1 and 0.
    Frame t's weight depends on the flags up to frame t + max(min_pause_frames - 1, ramp_frames): the look-ahead a
    live consumer of a flag stream waits for (the clip's end counts as no speech after)."""
    speech = np.asarray(speech, bool)
    num = len(speech)
    weights = np.ones(num, np.float64)
    t = 0
    while t < num:
        if speech[t]:
            t += 1
            continue
        end = t
        while end < num and not speech[end]:
            end += 1
        if end - t >= min_pause_frames:
            frames = np.arange(t, end)
            # distance to the speech before (none at the clip's start) and after (none at its end)
            before = frames - t + 1 if t > 0 else np.full(len(frames), np.inf)
            after = end - frames if end < num else np.full(len(frames), np.inf)
            d = np.minimum(before, after)
            ramp = 0.5 * (1 + np.cos(np.pi * np.minimum(d, ramp_frames + 1) / (ramp_frames + 1)))
            weights[t:end] = np.where(d <= ramp_frames, ramp, 0.0)
        t = end
    return weights


class StreamingPauseWeights:
    """Speech flags pushed in any pieces -> the lip weights `pause_weights` gives the whole clip, frame by frame.

    Frame t's weight is handed out once the flags reach t + lookahead (`pause_weights`: max(min_pause - 1, ramp)
    frames), or at close() (the clip's end). Memory stays bounded in an endless pause: what lies before the next
    frame is kept only as far as a weight can still depend on it (the speech frame a ramp starts from, and the
    pause's length up to min_pause), the rest as that many leading non-speech frames (the clip's start, where a
    pause has no ramp: the same weights once the speech before is more than a ramp away)."""

    def __init__(self, min_pause_frames: int, ramp_frames: int, reference_first: bool):
        self.min_pause, self.ramp = int(min_pause_frames), int(ramp_frames)
        self.lookahead = max(self.min_pause - 1, self.ramp)
        self.reference_first = reference_first  # relative motion: frame 0 keeps its lips (quiet_lips)
        self._flags = np.zeros(0, bool)  # frames _first .. _first + len - 1
        self._first = 0
        self._lead = 0  # non-speech frames standing in for the dropped ones before _first
        self._next = 0  # the next frame to hand out

    @property
    def frames_out(self) -> int:
        """Weights handed out so far."""
        return self._next

    @property
    def buffered(self) -> int:
        """Flags held (bounded by the look-ahead, the ramp and min_pause, whatever the stream's length)."""
        return len(self._flags) + self._lead

    def push(self, flags: np.ndarray) -> np.ndarray:
        """(n,) bool flags of the next frames -> (m,) float64 weights of the frames that became final."""
        flags = np.array(flags, bool)
        if self.reference_first and self._first + len(self._flags) == 0 and len(flags):
            flags[0] = True
        self._flags = np.concatenate([self._flags, flags])
        return self._emit(self._first + len(self._flags) - self.lookahead, end=False)

    def close(self) -> np.ndarray:
        """The clip's end -> (m,) float64 weights of every frame not yet handed out."""
        return self._emit(self._first + len(self._flags), end=True)

    def _emit(self, stop: int, end: bool) -> np.ndarray:
        if stop <= self._next:
            return np.zeros(0, np.float64)
        known = np.concatenate([np.zeros(self._lead, bool), self._flags])
        if not end:  # no clip end yet: speech may follow what is known (no weight below depends on it: class doc)
            known = np.concatenate([known, [True]])
        weights = pause_weights(known, self.min_pause, self.ramp)[self._lead :]
        out = weights[self._next - self._first : stop - self._first]
        self._next = stop
        self._trim()
        return out

    def _trim(self) -> None:
        """Drop the flags before _next that no later weight depends on (class doc)."""
        before = self._flags[: self._next - self._first]
        speech = np.flatnonzero(before)
        if len(speech) and self._next - (self._first + speech[-1]) <= self.ramp:
            keep, lead = self._first + speech[-1], 0  # the speech frame the ramp starts from
        else:
            paused = len(before) - (speech[-1] + 1 if len(speech) else 0) + (0 if len(speech) else self._lead)
            keep, lead = self._next, min(paused, self.min_pause)
        self._flags = self._flags[keep - self._first :].copy()
        self._first, self._lead = keep, lead


class LiveQuietLips:
    """A live session's silence: samples -> speech flags (StreamingVad) -> lip weights (StreamingPauseWeights); the
    session's motion rows wait here until their weights are known, then leave eased as `quiet_lips` eases them.

    A row waits for the audio `lookahead` frames past it (plus the VAD's one hop, 32 ms with silero); the motion
    rows already wait longer than that for the mel look-ahead, the hop and the smoother, so with the official
    settings (0.2 s min_pause and ramp = 5 frames) easing adds no lag."""

    def __init__(self, silence: Silence, fps: float, source: torch.Tensor, relative: bool):
        self.vad = StreamingVad(silence.detector, silence.threshold, silence.aggressiveness, fps)
        self.pauses = StreamingPauseWeights(round(silence.min_pause * fps), round(silence.ramp * fps), relative)
        self.source_lips = source[LIP_CHANNELS].double()
        self.target = neutral_lips(source, silence.neutral)
        self.relative = relative
        self._weights = np.zeros(0, np.float64)  # weights of rows not yet arrived
        self._rows: torch.Tensor | None = None  # rows waiting for their weights (n, 70)
        self._done = 0

    @property
    def buffered_rows(self) -> int:
        """Motion rows waiting for their weights."""
        return 0 if self._rows is None else len(self._rows)

    def hear(self, samples: np.ndarray) -> None:
        """The session's next 16 kHz samples (already checked) -> the weights they make final."""
        self._weights = np.concatenate([self._weights, self.pauses.push(self.vad.push(samples).values)])

    def hear_end(self) -> None:
        """The end of the speech: the VAD's last hop and every remaining weight."""
        last = self.pauses.push(self.vad.close().values)
        self._weights = np.concatenate([self._weights, last, self.pauses.close()])

    def ease(self, rows: torch.Tensor) -> torch.Tensor:
        """The next motion rows (n, 70) -> the rows (m, 70) whose weights are known, lips eased in pauses."""
        rows = rows if self._rows is None else torch.cat([self._rows, rows])
        ready = min(len(rows), len(self._weights))
        out, self._rows = rows[:ready], rows[ready:]
        if self.relative and self._done == 0 and ready:  # as quiet_lips: the neutral measured from frame 0
            self.target = out[0, LIP_CHANNELS].double() + (self.target - self.source_lips)
        eased = ease_lips(out, self._weights[:ready], self.target)
        self._weights = self._weights[ready:]
        self._done += ready
        return eased


def neutral_lips(source: torch.Tensor, neutral: str) -> torch.Tensor:
    """The source's raw motion (70,) -> the neutral mouth's lip channels (18,) (module doc: source | closed)."""
    lips = source[LIP_CHANNELS].double()
    if neutral == "source":
        return lips
    if neutral == "closed":
        v = lip_open_direction().to(lips.device)
        return lips - torch.clamp(lips @ v, min=0.0) * v
    raise ConfigError(f"silence.neutral={neutral!r} is not one of {NEUTRALS}")


def ease_lips(motion: torch.Tensor, weights: np.ndarray, target: torch.Tensor) -> torch.Tensor:
    """Motion (n, 70), weights (n,), neutral lips (18,) -> motion with lips target + w (lips - target) where w < 1.

    Rows with w = 1 are returned bit for bit; only the lip channels change."""
    out = motion.clone()
    rows = torch.from_numpy(np.flatnonzero(weights < 1)).to(motion.device)
    if len(rows):
        w = torch.from_numpy(weights).to(motion.device)[rows, None]
        lips = motion[rows][:, LIP_CHANNELS].double()
        eased = target.to(motion.device, torch.float64) + w * (lips - target.to(motion.device, torch.float64))
        out[rows[:, None], torch.tensor(LIP_CHANNELS, device=motion.device)[None]] = eased.to(motion.dtype)
    return out


def quiet_lips(
    pieces: Iterator[torch.Tensor],
    speech: np.ndarray,
    source: torch.Tensor,
    silence: Silence,
    fps: float,
    relative: bool,
) -> Iterator[torch.Tensor]:
    """Motion pieces (n, 70) of a clip with per-frame speech flags (T,) -> the same pieces, lips eased in pauses."""
    speech = np.array(speech, bool)
    if relative and len(speech):
        speech[0] = True  # frame 0 is the reference relative motion is measured from: it keeps its lips
    weights = pause_weights(speech, round(silence.min_pause * fps), round(silence.ramp * fps))
    target = neutral_lips(source, silence.neutral)
    done = 0
    for piece in pieces:
        if relative and done == 0 and piece.shape[0]:
            target = piece[0, LIP_CHANNELS].double() + (target - source[LIP_CHANNELS].double())
        yield ease_lips(piece, weights[done : done + piece.shape[0]], target)
        done += piece.shape[0]
