"""The portable 5-D grid sample (gathers) equals F.grid_sample(bilinear, zeros, align_corners=False) on CPU.

Measured here (torch 2.13 CPU, 2026-12-05): float32 and float64 are bit-identical to the native op (same
unnormalisation, same weight products, same corner order, multiply and add unfused), and so are the small renderer's
frames; the tests allow rtol 1e-6 / atol 1e-7 (frames: 1e-6) so that another CPU's build may round differently.
float16/bfloat16 are within half an ulp of the float64 result of the same inputs (weights and sum in float32), where
the native CPU kernel, which unnormalises and accumulates in the reduced precision, is many ulps off.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_renderer_batch import small_renderer

from kdtalker.errors import ConfigError
from kdtalker.renderer import grid_sample as gs
from kdtalker.renderer.grid_sample import grid_sample_3d, grid_sample_3d_portable, use_portable

pytestmark = pytest.mark.usefixtures("one_thread")


def native(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The op LivePortrait's warping module calls (grid_sample's defaults, spelled out)."""
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_case(b: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Odd sizes: volume (b, 3, 5, 7, 9), grid (b, 4, 6, 5, 3) in [-1.6, 1.6] (about a third outside [-1, 1])."""
    gen = torch.Generator().manual_seed(seed)
    volume = torch.randn(b, 3, 5, 7, 9, generator=gen, dtype=torch.float64)
    grid = torch.rand(b, 4, 6, 5, 3, generator=gen, dtype=torch.float64) * 3.2 - 1.6
    return volume.to(dtype), grid.to(dtype)


@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_native_on_random_grids(b, dtype):
    volume, grid = random_case(b, dtype)
    got = grid_sample_3d_portable(volume, grid)
    assert got.shape == (b, 3, 4, 6, 5) and got.dtype == dtype
    assert (grid.abs() > 1).any() and (got == 0).any()  # some points fall wholly outside
    torch.testing.assert_close(got, native(volume, grid), rtol=1e-6, atol=1e-7)


def test_borders_and_outside_exactly():
    """Per axis of size n: the outer edges (+-1), the first/last voxel centres (+-(1 - 1/n)), one voxel beyond
    them (+-(1 + 1/n): one corner inside with weight 0), far outside, and the centre; every combination."""
    volume = torch.randn(2, 2, 3, 5, 4, generator=torch.Generator().manual_seed(1))

    def values(n: int) -> torch.Tensor:
        return torch.tensor([-5.0, -1 - 1 / n, -1.0, -1 + 1 / n, 0.0, 1 - 1 / n, 1.0, 1 + 1 / n, 5.0])

    x, y, z = torch.meshgrid(values(4), values(5), values(3), indexing="ij")
    grid = torch.stack([x, y, z], dim=-1)[None].expand(2, -1, -1, -1, -1)  # (2, 9, 9, 9, 3)
    got = grid_sample_3d_portable(volume, grid)
    want = native(volume, grid)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    # the voxel centres read the voxels themselves; beyond half a voxel past the edge everything is 0
    assert torch.equal(got[:, :, 3, 3, 3], volume[:, :, 0, 0, 0]) and torch.equal(
        got[:, :, 5, 5, 5], volume[..., -1, -1, -1]
    )
    assert got[:, :, 0].abs().max() == 0 and got[:, :, :, :, 8].abs().max() == 0


def test_outside_points_read_zeros_not_clamped_voxels():
    """Zeros padding is exact: a point far outside reads the zero row, not a clamped voxel times weight 0 (which
    would make NaN from a NaN voxel); the native op also gives 0 there."""
    volume = torch.full((1, 1, 3, 3, 3), float("nan"))
    grid = torch.tensor([3.0, -4.0, 0.0]).view(1, 1, 1, 1, 3)
    assert torch.equal(grid_sample_3d_portable(volume, grid), native(volume, grid))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_is_rounded_once(dtype):
    """float16/bfloat16: within half an ulp of the float64 result of the same inputs, because the weights and the
    sum are float32; the native CPU kernel accumulates in the reduced precision. With the renderer's float32 grid
    and a 64-voxel axis (the warping module's case) the portable sample reads the grid unrounded, where the native
    op needs it rounded to the volume's dtype (measured at (1, 4, 16, 64, 64): bfloat16 max error 1.0 native vs
    7.8e-3 portable, float16 0.10 vs 9.6e-4)."""
    volume, grid = random_case(2, dtype)
    fine_volume = torch.randn(1, 2, 3, 5, 64, generator=torch.Generator().manual_seed(2)).to(dtype)
    fine_grid = torch.rand(1, 2, 5, 64, 3, generator=torch.Generator().manual_seed(3)) * 2.2 - 1.1  # float32
    for v, g in ((volume, grid), (fine_volume, fine_grid)):
        got = grid_sample_3d(v, g, "portable")
        assert got.dtype == dtype
        exact = native(v.double(), g.double())
        ulp = torch.finfo(dtype).eps * exact.abs().clamp_min(torch.finfo(dtype).tiny)
        assert ((got.double() - exact).abs() <= 0.5 * ulp + 1e-12).all()
        native_error = (grid_sample_3d(v, g, "native").double() - exact).abs().max()
        assert (got.double() - exact).abs().max() <= native_error


def test_exports_without_a_grid_sampler():
    """portable is for export: torch.export gives a graph of plain ops (no grid_sampler), which computes the same.
    (Inference only: the backward is not tested.)"""

    class Sample(torch.nn.Module):
        def forward(self, volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
            return grid_sample_3d(volume, grid, "portable")

    volume, grid = random_case(1)
    exported = torch.export.export(Sample(), (volume, grid))
    ops = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert "aten.index_select.default" in ops and not any("grid_sampler" in op for op in ops)
    assert torch.equal(exported.module()(volume, grid), native(volume, grid))


def test_mode_resolution():
    cpu, mps = torch.device("cpu"), torch.device("mps")  # a device object needs no MPS backend
    assert use_portable("auto", mps) and not use_portable("auto", cpu)
    assert use_portable("portable", cpu) and not use_portable("native", mps)
    with pytest.raises(ValueError, match="grid_sample='cubic'"):
        use_portable("cubic", cpu)
    with pytest.raises(ConfigError, match=r"renderer\.grid_sample='cubic'"):
        small_renderer(grid_sample="cubic")


@pytest.fixture(scope="module")
def drive():
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 64, 64, generator=gen)
    r = small_renderer()
    x_s = r.transform(r.keypoint_info(image))
    return r.appearance_features(image), x_s, x_s + 0.05 * torch.randn(3, 21, 3, generator=gen)


def test_renderer_portable_renders_the_native_frames(drive):
    f_s, x_s, x_d = drive
    nat, por = small_renderer(grid_sample="native"), small_renderer(grid_sample="portable")
    assert por.warping.grid_sample == por.warping.dense_motion_network.grid_sample == "portable"
    got = por.render(por.source(f_s, x_s), x_d)
    torch.testing.assert_close(got, nat.render(nat.source(f_s, x_s), x_d), rtol=1e-6, atol=1e-6)


def test_auto_takes_the_portable_path_where_3d_grid_sample_is_missing(drive, monkeypatch):
    """auto on a device without grid_sampler_3d (MPS, simulated here: CPU listed as such and the 5-D native op made
    to fail as it does there) renders with the portable sample, the same frames."""
    f_s, x_s, x_d = drive
    nat = small_renderer(grid_sample="native")
    want = nat.render(nat.source(f_s, x_s), x_d)
    real = F.grid_sample

    def no_3d(input, grid, *args, **kwargs):
        if input.ndim == 5:
            raise NotImplementedError("grid_sampler_3d is not implemented for this device")
        return real(input, grid, *args, **kwargs)

    monkeypatch.setattr(F, "grid_sample", no_3d)
    monkeypatch.setattr(gs, "_NO_NATIVE_3D", ("cpu",))
    with pytest.raises(NotImplementedError):
        grid_sample_3d(f_s, torch.zeros(1, 1, 1, 1, 3), "native")
    r = small_renderer()  # grid_sample="auto"
    torch.testing.assert_close(r.render(r.source(f_s, x_s), x_d), want, rtol=1e-6, atol=1e-6)
