"""Renderer speed: LivePortrait frames/s (warping + SPADE decoder) for several batch sizes, with per-stage times.

    python scripts/benchmark.py renderer [--device auto] [--dtype float32] [--batch-sizes 1 4 16] [--repeats 1]

Weights are random (speed does not depend on their values); sizes are the official full-size configs.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

from kdtalker.device import resolve_device, resolve_dtype
from kdtalker.renderer import (
    AppearanceFeatureExtractor,
    LivePortraitRenderer,
    MotionExtractor,
    SPADEDecoder,
    WarpingNetwork,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed renders per batch size (after one warm-up at batch 1)"
    )
    parser.add_argument("--chunk-size", type=int, default=4, help="frames per warping/decoder forward inside render()")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--no-fold", action="store_true", help="keep BatchNorm unfolded (the official op sequence)")


class StageTimer:
    """Wall time spent inside chosen modules' forward calls (synchronising CUDA at each boundary)."""

    def __init__(self, device: torch.device, **modules: torch.nn.Module):
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda _m, _i, n=name: self._enter(n))
            module.register_forward_hook(lambda _m, _i, _o, n=name: self._leave(n))

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _enter(self, name: str) -> None:
        self._start[name] = self._now()

    def _leave(self, name: str) -> None:
        self.totals[name] += self._now() - self._start.pop(name)

    def reset(self) -> None:
        self.totals.clear()


def run(args: argparse.Namespace) -> None:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    torch.manual_seed(0)
    renderer = LivePortraitRenderer(
        AppearanceFeatureExtractor(),
        MotionExtractor(),
        WarpingNetwork(),
        SPADEDecoder(),
        chunk_size=args.chunk_size,
        fold_batchnorm=not args.no_fold,
    ).to(device=device, dtype=dtype)
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(
        f"renderer benchmark: device={device} dtype={dtype} threads={threads} chunk_size={args.chunk_size} "
        f"fold_batchnorm={not args.no_fold}",
        flush=True,
    )

    rgb = np.random.RandomState(0).randint(0, 256, (256, 256, 3), dtype=np.uint8)
    timer = StageTimer(
        device,
        appearance=renderer.appearance,
        motion=renderer.motion,
        warping=renderer.warping,
        decoder=renderer.decoder,
    )
    image = renderer.prepare_image(rgb)
    f_s = renderer.appearance_features(image)
    x_s = renderer.transform(renderer.keypoint_info(image))
    print(
        f"source: appearance {timer.totals['appearance']:.2f} s, motion {timer.totals['motion']:.2f} s "
        "(once per source image)",
        flush=True,
    )

    def drive(batch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(batch)
        return x_s.cpu() + 0.02 * torch.randn(batch, *x_s.shape[1:], generator=gen, dtype=x_s.dtype)

    print("warm-up render (batch 1) ...", flush=True)
    source = renderer.source(f_s, x_s)
    renderer.render(source, drive(1))
    for batch in args.batch_sizes:
        x_d = drive(batch)
        for rep in range(args.repeats):
            timer.reset()
            start = timer._now()
            frames = renderer.render(source, x_d)
            total = timer._now() - start
            assert frames.shape == (batch, 3, 512, 512)
            print(
                f"batch {batch:3d} [{rep + 1}/{args.repeats}]: {batch / total:6.3f} frames/s  "
                f"{total / batch:6.2f} s/frame  "
                f"(warping {timer.totals['warping'] / batch:.2f} s/frame, "
                f"decoder {timer.totals['decoder'] / batch:.2f} s/frame, "
                f"total {total:.1f} s)",
                flush=True,
            )
