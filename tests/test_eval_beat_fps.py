"""Beat-align score and FPS on inputs with known answers."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from kdtalker.eval.beat_align import beat_align_score, motion_beats
from kdtalker.eval.fps import Stopwatch, aggregate_fps, frames_per_second, timing_record


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


def test_timing_record_counts_sampling_and_rendering_only():
    timings = SimpleNamespace(load=9.0, crop=1.0, audio=0.5, sampling=0.75, rendering=3.25, writing=2.0, frames=100)
    assert timing_record(timings, wall_seconds=16.5) == {
        "frames": 100,
        "wall_seconds": 16.5,
        "generation_seconds": 4.0,
    }


def test_aggregate_fps_sums_before_dividing():
    records = [
        {"frames": 100, "wall_seconds": 20.0, "generation_seconds": 4.0},
        {"frames": 300, "wall_seconds": 30.0, "generation_seconds": 16.0},
    ]
    # 400 frames over 20 s of generation and 50 s of wall time (not the mean of 25 and 18.75 frames/s)
    assert aggregate_fps(records) == {"fps": 20.0, "fps_wall": 8.0}
    # an old record (stopwatch "seconds" only) counts as wall time and is left out of the generation FPS
    assert aggregate_fps([*records, {"frames": 100, "seconds": 50.0}]) == {"fps": 20.0, "fps_wall": 5.0}
    assert aggregate_fps([{"frames": 50, "seconds": 10.0}]) == {"fps_wall": 5.0}
    assert aggregate_fps([]) == {}
