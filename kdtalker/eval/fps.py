"""FPS: generated frames per second, two ways.

* generation (the tables' FPS column, "FPS (gen)"): frames over the pipeline's motion sampling plus rendering
  time (`TalkingHeadPipeline.timings.sampling + .rendering`) - the paper's frames over generation time, without
  model loading, face crop, audio features, file I/O or video encoding. Each stage counts its busy time, so where
  sampling runs alongside rendering (the pipeline's `overlap`, on by default on CUDA) the sum can exceed the
  elapsed time and this FPS is a lower bound;
* wall ("FPS (wall)"): frames over a stopwatch around the whole `generate` call (all of the above; the first
  clip of a row also pays for loading the models).

Each generated clip gets `<clip>.fps.json` = {"frames", "wall_seconds", "generation_seconds"}; older files with
only "seconds" were stopwatch times and count as wall time.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence


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


def timing_record(timings: Any, wall_seconds: float) -> dict:
    """A pipeline's `timings` after one generate + the stopwatch seconds around it -> the fps.json record."""
    return {
        "frames": int(timings.frames),
        "wall_seconds": float(wall_seconds),
        "generation_seconds": float(timings.sampling) + float(timings.rendering),
    }


def aggregate_fps(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """fps.json records -> {"fps": frames / generation seconds, "fps_wall": frames / wall seconds} over all clips.

    Sums before dividing (a long clip weighs more, as one stopwatch over the whole set would). A value is left out
    when no record has its time; "fps" covers only the records that have a generation time.
    """
    out: dict[str, float] = {}
    wall = [(r["frames"], r.get("wall_seconds", r.get("seconds"))) for r in records]
    wall = [(f, s) for f, s in wall if s is not None]
    gen = [(r["frames"], r["generation_seconds"]) for r in records if r.get("generation_seconds") is not None]
    for key, pairs in (("fps", gen), ("fps_wall", wall)):
        if pairs:
            out[key] = frames_per_second(sum(int(f) for f, _ in pairs), sum(float(s) for _, s in pairs))
    return out
