"""Beat-align score and FPS on inputs with known answers."""

import math

import numpy as np
import pytest

from kdtalker.eval.beat_align import beat_align_score, motion_beats
from kdtalker.eval.fps import Stopwatch, frames_per_second


def test_beat_align_closed_form():
    assert beat_align_score([1.0, 2.0], [1.0, 2.0]) == 1.0
    # distances 0.1 and 0.2 to the nearest motion beat, sigma 0.1
    expected = (math.exp(-0.5) + math.exp(-2.0)) / 2
    assert beat_align_score([1.0, 2.0], [1.1, 1.8, 5.0]) == pytest.approx(expected)
    assert math.isnan(beat_align_score([], [1.0]))


def test_motion_beats_are_velocity_minima():
    # A head bobbing with period 40 frames, phase-shifted half a frame so that the frame-to-frame speed
    # v[k] ~ |cos(2 pi k / 40)| vanishes exactly at k = 10, 30, 50, ...
    t = np.arange(120)
    landmarks = np.zeros((120, 68, 2))
    landmarks[..., 1] = 10 * np.sin(2 * np.pi * (t - 0.5) / 40)[:, None]
    np.testing.assert_array_equal(motion_beats(landmarks), [10, 30, 50, 70, 90, 110])
    assert len(motion_beats(np.zeros((30, 68, 2)))) == 0  # no motion, no strict minimum


def test_fps():
    assert frames_per_second(50, 2.0) == 25.0
    assert frames_per_second(10, 0.0) == math.inf
    with pytest.raises(ValueError):
        frames_per_second(-1, 1.0)
    ticks = iter([10.0, 12.5])
    with Stopwatch(clock=lambda: next(ticks)) as sw:
        pass
    assert sw.seconds == 2.5
