"""The 'rendering' progress bar: its total is the frame count, and after the first batch it says how long the whole
video will take (frames x the seconds per frame measured so far), before tqdm's own rate has settled."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


class RenderingProgress(tqdm):
    """tqdm over the frames of one video; `estimate` (seconds for all of them) is set after the first batch."""

    def __init__(self, frames: int, **kwargs: Any) -> None:
        super().__init__(total=frames, desc="rendering", unit="frame", **kwargs)
        self.estimate: float | None = None

    def update(self, n: float | None = 1) -> bool | None:
        """Count `n` more frames; the first time, measure seconds per frame and show the estimated total."""
        first = self.estimate is None and not self.disable and self.n == 0 and n
        shown = super().update(n)
        if first:
            per_frame = self.format_dict["elapsed"] / self.n
            self.estimate = per_frame * self.total
            frames = f"{self.total} frame" + ("" if self.total == 1 else "s")
            self.set_postfix_str(f"{per_frame:.1f} s/frame: about {self.format_interval(self.estimate)} for {frames}")
        return shown
