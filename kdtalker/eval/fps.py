"""FPS: generated frames per second of wall-clock time around one generation call."""

from __future__ import annotations

import time
from typing import Callable


def frames_per_second(num_frames: int, seconds: float) -> float:
    """num_frames / seconds (inf for a zero duration)."""
    if num_frames < 0 or seconds < 0:
        raise ValueError(f"frames and seconds must be >= 0, got {num_frames}, {seconds}")
    return float("inf") if seconds == 0 else num_frames / seconds


class Stopwatch:
    """`with Stopwatch() as sw: ...` then `sw.seconds`; the clock is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.seconds = 0.0

    def __enter__(self) -> "Stopwatch":
        self._start = self.clock()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = self.clock() - self._start
