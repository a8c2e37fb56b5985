"""End-to-end inference speed and peak memory per stage (crop, audio, sampling, rendering, writing) for a 10 s clip.

    python scripts/benchmark.py pipeline                          # random weights, CPU-friendly: 8 rendered frames
    python scripts/benchmark.py pipeline --checkpoint-dir checkpoints --frames 0 --device cuda

Without --checkpoint-dir the official-layout files are written from randomly initialised modules (same shapes and
cost as the real ones, meaningless pictures). Sampling always covers the whole clip; with
--frames N only the first N frames are rendered and written and the full-clip time is extrapolated from them
(printed as such). Memory: peak resident set size of this process per stage (Linux), and peak CUDA memory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from benchmarks.weights import write_random_checkpoints

REPO = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint-dir", default=None, help="official weights (default: random weights in a temp dir)"
    )
    parser.add_argument("--image", default=str(REPO / "examples" / "astronaut.png"))
    parser.add_argument("--audio", default=str(REPO / "examples" / "speech.wav"), help="looped/cut to --seconds")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--frames", type=int, default=8, help="frames to render and write (0 = all)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--paste-back", action="store_true")


def _rss_peak_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_rss_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: restart the VmHWM high-water mark
    except OSError:
        pass


@contextmanager
def _measure(results: dict, name: str, device: torch.device):
    _reset_rss_peak()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    entry = results.setdefault(name, {"seconds": 0.0, "rss_mib": 0.0, "cuda_mib": 0.0})
    entry["seconds"] += time.perf_counter() - start
    entry["rss_mib"] = max(entry["rss_mib"], _rss_peak_mib())
    if device.type == "cuda":
        entry["cuda_mib"] = max(entry["cuda_mib"], torch.cuda.max_memory_allocated(device) / 2**20)


def _clip(path: str, seconds: float) -> Path:
    import soundfile as sf

    from kdtalker.audio import load_audio

    wav = load_audio(path)
    n = int(seconds * 16000)
    wav = np.tile(wav, -(-n // len(wav)))[:n]
    out = Path(tempfile.mkdtemp(prefix="kdtalker_bench_")) / "clip.wav"
    sf.write(out, wav, 16000)
    return out


def run(args: argparse.Namespace) -> None:
    from kdtalker.audio import audio_features, load_audio, num_video_frames
    from kdtalker.pipeline import Controls, TalkingHeadPipeline
    from kdtalker.pipeline.image import load_image

    tmp = None
    root = args.checkpoint_dir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="kdtalker_fixture_ckpt_")
        print("writing random weights in the official layout ...", flush=True)
        root = write_random_checkpoints(Path(tmp.name))
    controls = Controls(steps=args.steps, batch_size=args.batch_size, paste_back=args.paste_back)
    pipe = TalkingHeadPipeline(root, device=args.device, dtype=args.dtype, controls=controls)
    device = pipe.device
    results: dict = {}
    with _measure(results, "load", device):
        models = pipe.load()
    clip = _clip(args.audio, args.seconds)

    with torch.inference_mode():
        with _measure(results, "crop", device):
            image = load_image(args.image)
            face = pipe.crop(image)
            source = models["renderer"].encode_source(face.image)
            info = source.info
        with _measure(results, "audio", device):
            wav = load_audio(clip)
            total = num_video_frames(len(wav))
            features = audio_features(wav, models["audio"], batch_size=pipe.audio_batch_size)
        with _measure(results, "sampling", device):
            motion = pipe.sample(info, features, controls)
            x_d = pipe.driving_keypoints(info, motion, controls)
        frames = total if args.frames <= 0 else min(args.frames, total)
        out = Path(tempfile.mkdtemp(prefix="kdtalker_bench_")) / "bench.mp4"
        pipe.timings.rendering = pipe.timings.writing = 0.0
        _reset_rss_peak()
        pipe._render_to_file(source, x_d[:frames], face, image, wav[: frames * 640], out, controls)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        peak = _rss_peak_mib()
        results["rendering"] = {
            "seconds": pipe.timings.rendering,
            "rss_mib": peak,
            "cuda_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0,
        }
        results["writing"] = {"seconds": pipe.timings.writing, "rss_mib": peak, "cuda_mib": 0.0}

    per_frame = (results["rendering"]["seconds"] + results["writing"]["seconds"]) / frames
    fixed = sum(results[k]["seconds"] for k in ("crop", "audio", "sampling"))
    full = fixed + per_frame * total
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"device: {name}, dtype {args.dtype}; clip {args.seconds:g} s = {total} frames; {args.steps} DDIM steps; "
        f"batch {args.batch_size}; rendered {frames} frames; weights: {'random' if tmp else root}"
    )
    print(f"{'stage':<10} {'seconds':>9} {'frames/s':>9} {'peak RSS MiB':>13} {'peak CUDA MiB':>14}")
    for stage in ("load", "crop", "audio", "sampling", "rendering", "writing"):
        r = results[stage]
        count = frames if stage in ("rendering", "writing") else total
        rate = "" if stage in ("load", "crop") else f"{count / max(r['seconds'], 1e-9):9.2f}"
        print(f"{stage:<10} {r['seconds']:9.2f} {rate:>9} {r['rss_mib']:13.0f} {r['cuda_mib']:14.0f}")
    label = "measured" if frames == total else f"extrapolated from {frames} rendered frames"
    print(
        f"end to end (without load): {full:.1f} s for {total} frames = {total / full:.2f} frames/s ({label}); "
        f"real time = 25 frames/s"
    )
    if tmp is not None:
        tmp.cleanup()
