"""Streaming latency: how soon the first frame of a 10 s clip arrives, then the rate of the frames after it.

    python scripts/benchmark.py latency                       # random weights, 8 frames on CPU
    python scripts/benchmark.py latency --checkpoint-dir checkpoints --frames 0 --device cuda

Frames come from `TalkingHeadPipeline.stream`: the first one needs the crop, the audio features, the first motion
window (64 frames of DDIM), the Kalman smoother's lag and one render batch, not the whole clip.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.pipeline import REPO, _clip, build_pipeline
from benchmarks.weights import write_random_checkpoints


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-dir", default=None, help="official weights (default: random weights)")
    parser.add_argument("--image", default=str(REPO / "examples" / "astronaut.png"))
    parser.add_argument("--audio", default=str(REPO / "examples" / "speech.wav"), help="looped/cut to --seconds")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--frames", type=int, default=8, help="frames to stream (0 = the whole clip)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=None, help="render batch (default: the device's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--crop-file", default=None, help="a saved crop for machines without the landmark model")
    parser.add_argument("--warmup", action="store_true", help="stream a short clip first (a GPU's first-call costs)")


def run(args: argparse.Namespace) -> None:
    args.paste_back, args.compile = False, False
    with tempfile.TemporaryDirectory(prefix="kdtalker_bench_ckpt_") as tmp:
        root = args.checkpoint_dir or write_random_checkpoints(Path(tmp))
        pipe = build_pipeline(args, root)
        pipe.load()
        if args.warmup:
            for _ in pipe.stream(args.image, _clip(args.audio, 3.0)):
                pass
        clip = _clip(args.audio, args.seconds)
        count, first, start = 0, None, time.perf_counter()
        for _ in pipe.stream(args.image, clip):
            count += 1
            if first is None:
                first = time.perf_counter()
                t = pipe.timings  # each stage's busy time until the first frame (host time: a GPU may lag it)
                stages = (
                    f"crop {t.crop:.3f} s, audio {t.audio:.3f} s, sampling {t.sampling:.3f} s, "
                    f"rendering {t.rendering:.3f} s"
                )
            if args.frames and count >= args.frames:
                break
        end = time.perf_counter()
    rate = (count - 1) / (end - first) if count > 1 else float("nan")
    batch = pipe.controls.updated({}, pipe.device).batch_size
    print(
        f"{args.seconds:g} s clip on {pipe.device} ({pipe.dtype}, {args.steps} DDIM steps, render batch "
        f"{batch}): first frame after {first - start:.3f} s (image read, crop, audio features, "
        f"the first motion window, the smoother's lag, one render batch); {count} frames at {rate:.2f} frames/s"
    )
    print(f"until the first frame: {stages} (audio = reading the file + the features of the whole clip)")
