"""End-to-end inference speed and peak memory per stage for a 10 s and a 60 s clip, through `stream()`.

    python scripts/benchmark.py pipeline                          # random weights, CPU-friendly: 4 rendered frames
    python scripts/benchmark.py pipeline --checkpoint-dir checkpoints --frames 0 --device cuda

Without --checkpoint-dir the official-layout files are written from randomly initialised modules (same shapes and
cost as the real ones, meaningless pictures). Per clip: the motion of the whole clip is sampled (timed and its
peak memory taken), then frames are streamed and the run stops after --frames of them (0 = all); the full-clip
time is sampling + crop/audio + the measured per-frame render cost times the clip's frames (printed as
extrapolated). Memory: peak resident set size of this process per stage (Linux), and peak CUDA memory; the
two clip lengths side by side show what grows with the clip (only the (T, 70) motion and (T, 21, 3) keypoints).
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
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0], help="clip lengths")
    parser.add_argument("--frames", type=int, default=4, help="frames to render per clip (0 = all)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=None, help="render batch (default: the device's)")
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
    from kdtalker.audio import load_audio
    from kdtalker.pipeline import Controls, TalkingHeadPipeline

    tmp = None
    root = args.checkpoint_dir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="kdtalker_bench_ckpt_")
        print("writing random weights in the official layout ...", flush=True)
        root = write_random_checkpoints(Path(tmp.name))
    controls = Controls(steps=args.steps, batch_size=args.batch_size, paste_back=args.paste_back)
    pipe = TalkingHeadPipeline(root, device=args.device, dtype=args.dtype, controls=controls)
    device = pipe.device
    results: dict = {}
    with _measure(results, "load", device):
        pipe.load()
    ctl = pipe._controls({})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"device: {name}, dtype {pipe.dtype}; {args.steps} DDIM steps; render batch {ctl.batch_size}; "
        f"weights: {'random' if tmp else root}; load {results['load']['seconds']:.1f} s"
    )
    for seconds in args.seconds:
        clip = _clip(args.audio, seconds)
        total = len(load_audio(clip)) // 640
        results = {}
        with _measure(results, "sampling", device), torch.inference_mode():
            job = pipe._prepare(args.image, clip, ctl)
            for _ in pipe.motion_pieces(job.source.info, job.features, ctl):
                pass
        prepare = pipe.timings.crop + pipe.timings.audio
        sampling = pipe.timings.sampling
        wanted = total if args.frames <= 0 else min(args.frames, total)
        frames, first = 0, None
        with _measure(results, "streaming", device):
            start = time.perf_counter()
            for _ in pipe.stream(args.image, clip):
                frames += 1
                first = time.perf_counter() - start if first is None else first
                if frames >= wanted:
                    break
        streamed = pipe.timings
        per_frame = (streamed.rendering + streamed.writing) / frames
        full = prepare + sampling + per_frame * total
        label = "measured" if frames == total else f"extrapolated from {frames} rendered frames"
        print(f"clip {seconds:g} s = {total} frames")
        print(f"  {'stage':<22} {'seconds':>9} {'frames/s':>9} {'peak RSS MiB':>13} {'peak CUDA MiB':>14}")
        rows = [
            ("crop + audio", prepare, None, results["sampling"]),
            ("sampling (whole clip)", sampling, total, results["sampling"]),
            (f"rendering ({frames} frames)", streamed.rendering, frames, results["streaming"]),
        ]
        for stage, secs, count, mem in rows:
            rate = f"{count / max(secs, 1e-9):9.2f}" if count else ""
            print(f"  {stage:<22} {secs:9.2f} {rate:>9} {mem['rss_mib']:13.0f} {mem['cuda_mib']:14.0f}")
        print(
            f"  first frame after {first:.1f} s; end to end (without load): {full:.1f} s for {total} frames = "
            f"{total / full:.2f} frames/s ({label}); real time = 25 frames/s",
            flush=True,
        )
    if tmp is not None:
        tmp.cleanup()
