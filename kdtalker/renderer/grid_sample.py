"""Trilinear sampling of a 5-D volume from gathers: LivePortrait's 3-D grid_sample where the backend lacks it.

Apple's MPS backend has no `grid_sampler_3d`, and exporters may not map it either. `grid_sample_3d_portable`
computes what `F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)` (the
settings of every sample in the warping module) computes, from floor, clamp, index_select and multiply-adds:

    u = ((g + 1) * n - 1) / 2                         (align_corners=False: -1 / +1 are the outer pixel edges)
    i0 = floor(u), i1 = i0 + 1, weights (i1 - u) and (u - i0) per axis, the 8 corners' products
    out = sum over the 8 corners of weight * volume[corner], a corner outside the volume reading 0 (zeros padding)

An outside corner reads a zero of the padded table (not a clamped voxel times a zero weight), so the
padding is exact even next to inf/NaN voxels. Written for inference (the renderer runs under inference_mode): no
backward is defined or tested. It traces to plain ops (torch.export: no grid sampler in the graph).
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
    """volume (B, C, D, H, W), grid (B, D', H', W', 3) -> (B, C, D', H', W'); native or portable per `mode`.

    The native op wants the grid in the volume's dtype (a float16/bfloat16 grid: coordinates off by up to ~0.1 voxel
    at 64 voxels, and the CPU kernel unnormalises them in that precision too); the portable sample reads a float32
    grid as it is and computes every coordinate in float32, so in half precision it is the more accurate of the two.
    """
    if use_portable(mode, volume.device):
        return grid_sample_3d_portable(volume, grid)
    return F.grid_sample(volume, grid.to(volume.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


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
    sizes = torch.tensor([w, h, d], device=volume.device)
    u = ((grid.reshape(b, n, 3).to(compute) + 1) * sizes - 1) / 2  # unnormalise (x, y, z), align_corners=False
    low = torch.floor(u)
    w0, w1 = low + 1 - u, u - low  # per-axis weights of the low and the high corner
    # the table (C, B * padded voxels): each channel a contiguous row, so a corner is one index_select of (C, N) and
    # the weighted sum runs along N (vectorised). Every spatial axis is zero-padded by 2 on each side and the low
    # corner clamped to [-2, n]: an outside corner, and both corners of a point far outside, read padding zeros.
    pd, ph, pw = d + 4, h + 4, w + 4
    table = volume.new_zeros(c, b, pd, ph, pw)
    table[:, :, 2 : d + 2, 2 : h + 2, 2 : w + 2] = volume.transpose(0, 1)
    table = table.reshape(c, b * pd * ph * pw)
    corner = torch.minimum(low.clamp_min(-2), sizes).to(torch.int64) + 2  # (B, N, 3) padded (x, y, z) of the low corner
    strides = torch.tensor([1, pw, pw * ph], device=volume.device)
    batch = torch.arange(b, device=volume.device)[:, None] * (pd * ph * pw)
    base = ((corner * strides).sum(-1) + batch).reshape(-1)  # (B * N,) row of the low corner
    wx, wy, wz = ([w0[..., k].reshape(-1), w1[..., k].reshape(-1)] for k in range(3))
    wxy = [[wx[x] * wy[y] for x in range(2)] for y in range(2)]  # the product order of ATen's CPU kernel
    out = None
    for z in range(2):
        for y in range(2):
            for x in range(2):
                row = base + ((z * ph + y) * pw + x) if z or y or x else base
                values = table.index_select(1, row).to(compute)  # (C, B * N), a fresh tensor: scaled in place
                values.mul_(wxy[y][x] * wz[z])
                # separate multiply and add in ATen's corner order: the same roundings (addcmul_ may fuse them)
                out = values if out is None else out.add_(values)
    return out.to(volume.dtype).view(c, b, od, oh, ow).transpose(0, 1)
