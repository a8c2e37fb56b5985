"""Driving keypoints -> checked uint8 video frames: one render batch on the device, then its host side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kdtalker.errors import KDTalkerError
from kdtalker.pipeline.controls import Controls
from kdtalker.pipeline.paste import PasteBack
from kdtalker.renderer import Source


@dataclass
class Rendered:
    """A rendered batch on its way out: uint8 frames (B, 512, 512, 3) and per-frame flags (B, 2) (NaN/inf, one flat
    colour) on the host; on a GPU they arrive by a non-blocking copy into pinned memory that `copied` marks done."""

    frames: torch.Tensor
    flags: torch.Tensor
    first: int
    paste: PasteBack | None
    copied: Any = None  # torch.cuda.Event, or None when the tensors are already on the host


def render_batch(
    renderer: Any, source: Source, x_d: torch.Tensor, first: int, ctl: Controls, paste: PasteBack | None
) -> Rendered:
    """Driving keypoints (B, 21, 3) -> the batch's uint8 frames on their way to the host (`finish_batch`)."""
    batch = x_d.to(source.x_s)
    if ctl.stitching:
        batch = renderer.stitch(source.x_s, batch)
    frames = renderer.render(source, batch, chunk_size=ctl.batch_size)
    flags = frame_flags(frames)
    # x255 then truncation to uint8, as LivePortrait's parse_output (not rounding); on the device: 4x fewer
    # bytes to copy than float32
    frames = (frames.float().clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    if frames.device.type != "cuda":
        return Rendered(frames.cpu(), flags.cpu(), first, paste)
    host = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True)
    host_flags = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
    host.copy_(frames, non_blocking=True)
    host_flags.copy_(flags, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    return Rendered(host, host_flags, first, paste, copied)


def finish_batch(rendered: Rendered, width: int, height: int, weights: str) -> np.ndarray:
    """The host side of a rendered batch: wait for its copy, check it, paste back -> uint8 (B, height, width, 3).

    weights: the renderer's files as an error names them (`weights.renderer_weights`)."""
    if rendered.copied is not None:
        rendered.copied.synchronize()
    check_frames(rendered.flags, rendered.first, weights)
    frames = rendered.frames.numpy()
    if rendered.paste is not None:
        frames = rendered.paste(frames)[:, :height, :width]
    return frames


def output_size(image: np.ndarray, paste_back: bool, frame_size: int) -> tuple[int, int]:
    """(width, height) of the video: the full image's (even, for yuv420p) with paste_back, else the rendered frame's
    (frame_size: 512 for LivePortrait, 256 for Face-vid2vid)."""
    return (image.shape[1] // 2 * 2, image.shape[0] // 2 * 2) if paste_back else (frame_size, frame_size)


def frame_flags(frames: torch.Tensor) -> torch.Tensor:
    """Rendered frames (B, 3, H, W) -> (B, 2) bool: [holds NaN/inf, is one flat colour], computed where they are."""
    flat = frames.flatten(1)
    bad_values = ~torch.isfinite(flat).all(dim=1)
    constant = (flat.amax(dim=1) - flat.amin(dim=1)) == 0
    return torch.stack([bad_values, constant], dim=1)


def check_frames(flags: torch.Tensor, first: int, weights: str) -> None:
    """KDTalkerError when a frame's flags (B, 2) from `frame_flags` say NaN/inf or one flat colour: broken weights."""
    for index, (nan, flat_colour) in enumerate(flags.tolist()):
        if nan or flat_colour:
            what = "holds NaN or infinite values" if nan else "is a single flat colour"
            raise KDTalkerError(f"rendered frame {first + index} {what}: {weights} are broken; download them again")
