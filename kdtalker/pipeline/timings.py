"""Seconds per stage of a run: each stage counts its busy time (stages may overlap)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Iterator


@dataclass
class Timings:
    """Seconds per stage of the last `generate` call (+ model loading); rendering and writing interleave."""

    load: float = 0.0
    crop: float = 0.0
    audio: float = 0.0
    sampling: float = 0.0
    rendering: float = 0.0
    writing: float = 0.0
    wall: float = 0.0  # first input read to last frame out (stages may overlap; each stage counts its busy time)
    frames: int = 0
    _wall_start: float = field(default=0.0, init=False, repr=False)

    def reset(self) -> None:
        """Zero every count but the model loading's (done once, it keeps its time); the wall clock starts now."""
        for f in fields(self):
            if f.name != "load":
                setattr(self, f.name, type(f.default)())
        self._wall_start = time.perf_counter()

    def stop_wall(self) -> None:
        """The wall time since `reset`."""
        self.wall = time.perf_counter() - self._wall_start

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the time spent inside to the stage `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, name, getattr(self, name) + time.perf_counter() - start)
