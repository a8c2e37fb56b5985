"""A driving video -> its raw LivePortrait motion per frame, each frame cropped like the source."""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import torch

from kdtalker.errors import ImageError
from kdtalker.media import iter_video
from kdtalker.pipeline.control import fill_missing
from kdtalker.pipeline.face import FaceCrop
from kdtalker.pipeline.motion import motions_of
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

EXTRACT_BATCH = 16  # crops per motion-extractor batch


def driving_motion(
    path: str | os.PathLike,
    renderer: Any,
    crop: Callable[[np.ndarray], FaceCrop],
    fps: float,
    limit: int | None = None,
) -> tuple[torch.Tensor, str | None]:
    """A driving video -> its raw motion per frame (V, 70) at `fps` (the first `limit` frames), and a note when some
    frames show no face (those hold the nearest face's motion). `crop` is the source's crop, LivePortrait's motion
    extractor (`renderer.keypoint_info`) runs batched."""
    crops, found, rows = [], [], []

    def flush() -> None:
        if crops:
            images = torch.cat([renderer.prepare_image(c) for c in crops])
            # LivePortrait's motion: a driving video is refused for other renderers (request.py)
            rows.append(motions_of(renderer.keypoint_info(images), LIVEPORTRAIT_LAYOUT))  # on the renderer's device
            crops.clear()

    for frames in iter_video(path, fps=fps):
        for frame in frames:
            if limit is not None and len(found) >= limit:
                break
            try:
                crops.append(crop(frame).image)
                found.append(True)
            except ImageError:
                crops.append(np.zeros((256, 256, 3), np.uint8))  # placeholder; its motion is replaced below
                found.append(False)
            if len(crops) == EXTRACT_BATCH:
                flush()
        if limit is not None and len(found) >= limit:
            break
    flush()
    found = np.asarray(found)
    motion = fill_missing(torch.cat(rows), found)
    note = None
    if not found.all():
        note = (
            f"{int((~found).sum())} of {len(found)} driving-video frames show no face; "
            "they hold the nearest frame's motion"
        )
    return motion, note
