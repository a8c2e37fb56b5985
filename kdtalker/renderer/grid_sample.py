"""Trilinear sampling of a 5-D volume from gathers: LivePortrait's 3-D grid_sample where the backend lacks it.

Apple's MPS backend has no `grid_sampler_3d`, and exporters may not map it either. `grid_sample_3d_portable`
computes what `F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)` (the
settings of every sample in the warping module) computes, from floor, clamp, index_select and multiply-adds:

    u = ((g + 1) * n - 1) / 2                         (align_corners=False: -1 / +1 are the outer pixel edges)
    i0 = floor(u), i1 = i0 + 1, weights (i1 - u) and (u - i0) per axis, the 8 corners' products
    out = sum over the 8 corners of weight * volume[corner], a corner outside the volume reading 0 (zeros padding)

An outside corner reads a zero row appended to the gathered table (not a value times a zero weight), so the
padding is exact even next to inf/NaN voxels. Inference only: no backward is defined or tested.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GRID_SAMPLE_MODES = ("auto", "native", "portable")
# devices whose PyTorch backend has no grid_sampler_3d (cannot be probed without the device: named here)
_NO_NATIVE_3D = ("mps",)


def use_portable(mode: str, device: torch.device) -> bool:
    """The renderer's `grid_sample` setting on `device` -> whether to sample with the portable version."""
    if mode not in GRID_SAMPLE_MODES:
        raise ValueError(f"grid_sample={mode!r} is not one of {GRID_SAMPLE_MODES}")
    if mode == "auto":
        return device.type in _NO_NATIVE_3D
    return mode == "portable"


def grid_sample_3d(volume: torch.Tensor, grid: torch.Tensor, mode: str = "auto") -> torch.Tensor:
    """volume (B, C, D, H, W), grid (B, D', H', W', 3) -> (B, C, D', H', W'); native or portable per `mode`."""
    if use_portable(mode, volume.device):
        return grid_sample_3d_portable(volume, grid)
    return F.grid_sample(volume, grid.to(volume.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def _corners(coord: torch.Tensor, size: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Normalised coordinates (N,) on an axis of `size` -> ([i0, i1] clamped, [w0, w1], [inside0, inside1])."""
    u = ((coord + 1) * size - 1) / 2  # unnormalise, align_corners=False
    i0 = torch.floor(u)
    i1 = i0 + 1
    weights = [i1 - u, u - i0]
    inside = [(i >= 0) & (i <= size - 1) for i in (i0, i1)]
    index = [i.clamp(0, size - 1).to(torch.int64) for i in (i0, i1)]
    return index, weights, inside


@torch.no_grad()
def grid_sample_3d_portable(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """volume (B, C, D, H, W), grid (B, D', H', W', 3) of (x, y, z) in [-1, 1] -> (B, C, D', H', W').

    Equals F.grid_sample(volume, grid, "bilinear", "zeros", align_corners=False). Coordinates and weights are
    computed in float32 (float64 for a float64 volume) whatever the grid's dtype, and the 8-corner sum is
    accumulated in that precision, then cast to the volume's dtype: float16/bfloat16 volumes lose precision only
    in their own storage and the final rounding.
    """
    b, c, d, h, w = volume.shape
    gb, od, oh, ow, three = grid.shape
    if three != 3 or gb != b:
        raise ValueError(f"grid {tuple(grid.shape)} does not fit volume {tuple(volume.shape)}: need (B, D', H', W', 3)")
    compute = torch.promote_types(volume.dtype, torch.float32)
    n = od * oh * ow
    points = grid.reshape(b * n, 3).to(compute)
    ix, wx, mx = _corners(points[:, 0], w)
    iy, wy, my = _corners(points[:, 1], h)
    iz, wz, mz = _corners(points[:, 2], d)
    # one table of voxels as rows of C channels, batches stacked, plus a zero row that every outside corner reads
    voxels = b * d * h * w
    table = torch.cat([volume.permute(0, 2, 3, 4, 1).reshape(voxels, c), volume.new_zeros(1, c)])
    batch_offset = (torch.arange(b, device=volume.device) * (d * h * w)).repeat_interleave(n)
    out = None
    for z in range(2):
        for y in range(2):
            for x in range(2):
                row = batch_offset + (iz[z] * h + iy[y]) * w + ix[x]
                row = torch.where(mz[z] & my[y] & mx[x], row, voxels)
                weight = wx[x] * wy[y] * wz[z]  # the product order of ATen's CPU kernel
                term = table.index_select(0, row).to(compute) * weight[:, None]
                out = term if out is None else out + term
    return out.to(volume.dtype).view(b, n, c).permute(0, 2, 1).reshape(b, c, od, oh, ow)
