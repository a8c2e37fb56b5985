"""Motion sampling speed: a 10 s utterance (250 frames at 25 fps = 4 windows of 64) with 50 DDIM steps, full-size model.

    python scripts/benchmark.py sampler                       # randomly initialised full-size denoiser, auto device
    python scripts/benchmark.py sampler --checkpoint checkpoints/KDTalker.pth --device cuda --samples 4

Weights do not change the cost, so without --checkpoint a randomly initialised model of the official size is timed.
Audio features are random. Prints the whole-utterance time, the time per window and per denoiser step; with
--samples N the N utterances are sampled side by side in one batch. On CUDA the steps run eagerly and replayed
from CUDA graphs (the pipeline's `cuda_graphs`, on there by default), alternating, with the largest difference
between the two samples (same noise); --no-graphs times the eager steps alone.
"""

from __future__ import annotations

import argparse
import time

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None, help="KDTalker.pth (default: random full-size weights)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps per window")
    parser.add_argument("--samples", type=int, default=1, help="utterances sampled side by side (batch)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-graphs", action="store_true", help="CUDA: eager steps only (cuda_graphs=false)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> None:
    from kdtalker.device import resolve_device
    from kdtalker.diffusion import DDIMScheduler, Denoiser, load_kdtalker, sample_motion

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_kdtalker(args.checkpoint, device) if args.checkpoint else Denoiser().to(device).eval()
    scheduler = DDIMScheduler()
    frames = int(round(args.seconds * args.fps))
    windows = -(-frames // model.window)
    gen = torch.Generator(device="cpu").manual_seed(0)
    audio = torch.randn(args.samples, frames, model.audio_dim, generator=gen).to(device)
    source = torch.randn(args.samples, model.motion_dim, generator=gen).to(device)
    ori = torch.randn(args.samples, model.motion_dim, generator=gen).to(device)

    modes = ["eager", "cuda graphs"] if device.type == "cuda" and not args.no_graphs else ["eager"]
    for mode in modes:  # warm-up, and the graph's recording
        model.cuda_graphs = mode == "cuda graphs"
        sample_motion(model, scheduler, audio[:, : model.window], source, ori, steps=2, progress=False)
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    motion: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for mode in modes:  # alternating, so that a drift in the machine's speed hits both
            model.cuda_graphs = mode == "cuda graphs"
            noise = torch.Generator(device=device).manual_seed(1)
            _sync(device)
            start = time.perf_counter()
            motion[mode] = sample_motion(
                model, scheduler, audio, source, ori, steps=args.steps, generator=noise, progress=False
            )
            _sync(device)
            times[mode].append(time.perf_counter() - start)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in model.parameters())
    weights = "checkpoint" if args.checkpoint else "random weights"
    print(f"device: {name}; model {params / 1e6:.2f} M parameters ({weights})")
    print(
        f"utterance: {args.seconds:g} s = {frames} frames at {args.fps} fps = {windows} windows of {model.window}; "
        f"{args.steps} DDIM steps; batch {args.samples}"
    )
    for mode in modes:
        assert motion[mode].shape == (args.samples, frames, model.motion_dim)
        best = min(times[mode])
        print(
            f"{mode}: sampling time {best:.3f} s (best of {len(times[mode])}) = {best / windows:.3f} s per window, "
            f"{1000 * best / (windows * args.steps):.2f} ms per denoiser step, "
            f"{args.samples * frames / best:.1f} frames/s"
        )
    if len(modes) == 2:
        ratio = min(times["eager"]) / min(times["cuda graphs"])
        error = (motion["cuda graphs"] - motion["eager"]).abs().max().item()
        print(f"cuda graphs: x{ratio:.2f} over eager; max |graphs - eager| {error:.2e} (normalised motion)")
