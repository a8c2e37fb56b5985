"""3-D grid sample speed: the portable (gather) sample against the native F.grid_sample, at the renderer's sizes.

    python scripts/benchmark.py grid_sample [--device auto] [--rounds 5] [--dtypes float32] [--warp]

One warp (batch 1) samples twice: the dense-motion network reads the compressed source (1, 4, 16, 64, 64) at its
22 candidate motions (grid (1, 22 * 16, 64, 64, 3)), then the warping module reads f_s (1, 32, 16, 64, 64) at the
blended deformation (grid (1, 16, 64, 64, 3)). Both are timed as one "warp's samples"; --warp also times the whole
warping module (random full-size weights) with grid_sample=native and =portable. Rounds alternate native, portable,
... so drift of a shared machine hits both; the median and the best of the rounds are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from kdtalker.device import check_dtype, cpu_name, resolve_device, resolve_dtype
from kdtalker.errors import ConfigError
from kdtalker.renderer import WarpingNetwork
from kdtalker.renderer.warping import sample_volume

MODES = ("native", "portable")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], help="float32 float16 bfloat16")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (one native + one portable each)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--warp", action="store_true", help="also time the whole warping module per mode")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rounds(device: torch.device, rounds: int, calls: dict) -> dict[str, list[float]]:
    """Each call once untimed (warm-up), then `rounds` alternating timed calls -> seconds per call per mode."""
    times: dict[str, list[float]] = {mode: [] for mode in calls}
    for fn in calls.values():
        fn()
    for _ in range(rounds):
        for mode, fn in calls.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[mode].append(time.perf_counter() - start)
    return times


def _report(what: str, times: dict[str, list[float]]) -> None:
    median = {mode: statistics.median(t) for mode, t in times.items()}
    best = {mode: min(t) for mode, t in times.items()}
    print(
        f"  {what}: native {1e3 * median['native']:.1f} ms (best {1e3 * best['native']:.1f}), portable "
        f"{1e3 * median['portable']:.1f} ms (best {1e3 * best['portable']:.1f}); portable / native "
        f"x{median['portable'] / median['native']:.2f} (medians of {len(times['native'])})",
        flush=True,
    )


@torch.inference_mode()
def run(args: argparse.Namespace) -> None:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu_name()}"
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(
        f"grid_sample benchmark on {where}{threads}, torch {torch.__version__}; batch 1, full-size volumes", flush=True
    )
    gen = torch.Generator().manual_seed(0)
    f_s = torch.randn(1, 32, 16, 64, 64, generator=gen)
    compressed = torch.rand(1, 4, 16, 64, 64, generator=gen)
    # grids like the renderer's: around the identity, a little outside [-1, 1] at the borders
    sparse = torch.rand(1, 22, 16, 64, 64, 3, generator=gen) * 2.2 - 1.1
    deformation = torch.rand(1, 1, 16, 64, 64, 3, generator=gen) * 2.2 - 1.1
    for dtype_name in args.dtypes:
        dtype = resolve_dtype(dtype_name)
        try:
            check_dtype(device, dtype)
        except ConfigError as exc:
            print(f"{dtype_name}: skipped: {exc}", flush=True)
            continue
        v, c = f_s.to(device, dtype), compressed.to(device, dtype)
        s, d = sparse.to(device), deformation.to(device)

        def samples(mode: str):
            return lambda: (sample_volume(c, s, mode), sample_volume(v, d, mode))

        print(f"{dtype_name}:", flush=True)
        got, want = samples("portable")(), samples("native")()
        error = max(float((g.float() - w.float()).abs().max()) for g, w in zip(got, want))
        print(f"  max |portable - native| over both samples: {error:.2e}", flush=True)
        _report("one warp's two samples", _rounds(device, args.rounds, {m: samples(m) for m in MODES}))
        if args.warp:
            torch.manual_seed(0)
            warping = WarpingNetwork().eval().to(device, dtype)
            x_s = 0.1 * torch.randn(1, 21, 3, generator=gen).to(device)
            x_d = x_s + 0.02 * torch.randn(1, 21, 3, generator=gen).to(device)

            def warp(mode: str):
                def call():
                    warping.grid_sample = warping.dense_motion_network.grid_sample = mode
                    return warping(v, x_d, x_s)["out"]

                return call

            _report("whole warping module", _rounds(device, args.rounds, {m: warp(m) for m in MODES}))
