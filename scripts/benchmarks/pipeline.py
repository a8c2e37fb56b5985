"""End-to-end inference speed and peak memory per stage for a 10 s and a 60 s clip.

    python scripts/benchmark.py pipeline                          # random weights, CPU-friendly: 4 rendered frames
    python scripts/benchmark.py pipeline --frames 0 --device cuda --dtype float16 [--mp4] [--paste-back]

Without --checkpoint-dir the official-layout files are written from randomly initialised modules (same shapes and
cost as the real ones, meaningless pictures). --frames 0 (a GPU): the whole clip end to end, as a user gets it:
image read, crop, audio features, sampling, rendering, host copy, [paste-back], [H.264 + AAC encoding with --mp4,
else frames taken from `stream()`]; after a warm-up clip. Printed: wall time, frames/s, first-frame latency and
each stage's busy time (stages overlap on a GPU, so they add up to more than the wall). --frames N (a CPU): the
motion of the whole clip is sampled (timed), then N frames are rendered and the full clip is extrapolated.
Memory: peak resident set size of this process per stage (Linux), and peak CUDA memory; the two clip lengths
side by side show what grows with the clip (only the (T, 70) motion and (T, 21, 3) keypoints).
--crop-file: a saved crop (npz: image, matrix, landmarks, face_box) for machines without the landmark model.
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
    parser.add_argument("--mp4", action="store_true", help="end to end with the H.264 + AAC writer (generate())")
    parser.add_argument("--compile", action="store_true", help="renderer compile=true")
    parser.add_argument("--crop-file", default=None, help="a saved crop for machines without the landmark model")
    parser.add_argument("--json", default=None, help="also append the figures to this JSON-lines file")
    parser.add_argument("--no-overlap", action="store_true", help="overlap=false: stages one after another")
    parser.add_argument("--no-graphs", action="store_true", help="cuda_graphs=false: eager denoiser steps")
    parser.add_argument("--trace", action="store_true", help="time each render call (synchronised) and print them")


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


def use_saved_crop(pipe, path: str) -> None:
    """Every crop of `pipe` is the one saved in `path` (npz: image, matrix, landmarks, face_box)."""
    from kdtalker.pipeline.face import FaceCrop

    with np.load(path, allow_pickle=False) as data:
        crop = FaceCrop(data["image"], data["matrix"], data["landmarks"], tuple(data["face_box"].tolist()), 1)
    pipe.crop = lambda image, ctl=None: crop


def build_pipeline(args: argparse.Namespace, root):
    """The pipeline the benchmark measures, from its arguments."""
    from kdtalker.pipeline import TalkingHeadPipeline

    pipe = TalkingHeadPipeline.from_pretrained(
        root,
        device=args.device,
        dtype=args.dtype,
        steps=args.steps,
        batch_size=args.batch_size,
        paste_back=args.paste_back,
        compile=bool(getattr(args, "compile", False)),
        overlap=False if getattr(args, "no_overlap", False) else None,
        cuda_graphs=False if getattr(args, "no_graphs", False) else None,
    )
    if args.crop_file:
        use_saved_crop(pipe, args.crop_file)
    return pipe


def _trace_renders(pipe) -> None:
    """Wrap the renderer's render: each call synchronised and timed, printed at the end of each clip."""
    renderer = pipe.load().renderer
    plain, calls = renderer.render, []

    def render(*a, **k):
        if pipe.device.type == "cuda":
            torch.cuda.synchronize(pipe.device)
        start = time.perf_counter()
        out = plain(*a, **k)
        if pipe.device.type == "cuda":
            torch.cuda.synchronize(pipe.device)
        calls.append((round(time.perf_counter() - start, 4), int(a[1].shape[0])))
        if len(calls) in (1, 2, 3, 5, 10, 20):
            print(f"  render call {len(calls)}: {calls[-1][0]:.4f} s for {calls[-1][1]} frames", flush=True)
        return out

    renderer.render = render


def _record(args: argparse.Namespace, **figures) -> None:
    if args.json:
        import json

        with open(args.json, "a") as fh:
            fh.write(json.dumps({"benchmark": "pipeline", **figures}) + "\n")


def _end_to_end(pipe, args: argparse.Namespace, clip: Path, total: int, results: dict) -> dict:
    """The whole clip as a user runs it -> wall seconds, first-frame latency, frames (stages' busy times in
    pipe.timings)."""
    device = pipe.device
    with _measure(results, "end to end", device):
        start = time.perf_counter()
        first, frames = None, 0
        if args.mp4:
            with tempfile.TemporaryDirectory(prefix="kdtalker_bench_out_") as out:
                pipe.generate(args.image, clip, Path(out) / "clip.mp4")
            frames = pipe.timings.frames
        else:
            for _ in pipe.stream(args.image, clip):
                frames += 1
                if first is None:
                    first = time.perf_counter() - start
                    at_first = dict(vars(pipe.timings))
        wall = time.perf_counter() - start
    if args.trace and first is not None:
        busy = ", ".join(f"{k} {v:.3f}" for k, v in at_first.items() if k not in ("load", "frames", "wall"))
        print(f"  at the first frame ({first:.3f} s): busy {busy}")
    return {"wall": wall, "first": first, "frames": frames}


def run(args: argparse.Namespace) -> None:
    from kdtalker.audio import load_audio
    from kdtalker.pipeline.request import Request

    tmp = None
    root = args.checkpoint_dir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="kdtalker_bench_ckpt_")
        print("writing random weights in the official layout ...", flush=True)
        root = write_random_checkpoints(Path(tmp.name))
    pipe = build_pipeline(args, root)
    device = pipe.device
    results: dict = {}
    with _measure(results, "load", device):
        pipe.load()
    if args.trace:
        _trace_renders(pipe)
    ctl = pipe.controls.updated({}, pipe.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"device: {name}, dtype {pipe.dtype}; {args.steps} DDIM steps; render batch {ctl.batch_size}; "
        f"paste-back {args.paste_back}; compile {args.compile}; encoder {'H.264' if args.mp4 else 'none (stream)'}; "
        f"weights: {'random' if tmp else root}; torch {torch.__version__}; load {results['load']['seconds']:.1f} s"
    )
    if args.frames <= 0:
        warm = _clip(args.audio, min(3.0, *args.seconds))
        print("warm-up (a clip of up to 3 s) ...", flush=True)
        _end_to_end(pipe, args, warm, len(load_audio(warm)) // 640, {})
    for seconds in args.seconds:
        clip = _clip(args.audio, seconds)
        total = len(load_audio(clip)) // 640
        results = {}
        if args.frames <= 0:
            got = _end_to_end(pipe, args, clip, total, results)
            t = pipe.timings
            mem = results["end to end"]
            first = f"{got['first']:.3f} s" if got["first"] is not None else "- (mp4)"
            print(
                f"clip {seconds:g} s = {total} frames: end to end {got['wall']:.2f} s = "
                f"{got['frames'] / got['wall']:.1f} frames/s; first frame after {first}; "
                f"peak RSS {mem['rss_mib']:.0f} MiB, peak CUDA {mem['cuda_mib']:.0f} MiB"
            )
            print(
                f"  busy time per stage: crop {t.crop:.2f} s, audio {t.audio:.2f} s, sampling {t.sampling:.2f} s, "
                f"rendering {t.rendering:.2f} s, host + paste-back + encoding {t.writing:.2f} s",
                flush=True,
            )
            _record(
                args,
                device=name,
                dtype=str(pipe.dtype),
                batch=ctl.batch_size,
                paste_back=args.paste_back,
                compile=args.compile,
                mp4=args.mp4,
                seconds=seconds,
                frames=got["frames"],
                wall=got["wall"],
                fps=got["frames"] / got["wall"],
                first_frame=got["first"],
                sampling=t.sampling,
                rendering=t.rendering,
                writing=t.writing,
                crop=t.crop,
                audio=t.audio,
                cuda_mib=mem["cuda_mib"],
                torch=torch.__version__,
            )
            continue
        with _measure(results, "sampling", device), torch.inference_mode():
            pipe.timings.reset()
            job = pipe._prepare(Request(ctl, source_image=args.image, driven_audio=clip, streamed=True).validate())
            for _ in pipe.motion_maker.pieces(job.source.info, job.features, ctl):
                pass
        prepare = pipe.timings.crop + pipe.timings.audio
        sampling = pipe.timings.sampling
        wanted = min(args.frames, total)
        frames, first = 0, None
        with _measure(results, "streaming", device):
            start = time.perf_counter()
            for _ in pipe.stream(args.image, clip):
                frames += 1
                first = time.perf_counter() - start if first is None else first
                if frames >= wanted:
                    break
        streamed = pipe.timings
        rendered = min(total, -(-frames // ctl.batch_size) * ctl.batch_size)  # whole batches were rendered
        per_frame = (streamed.rendering + streamed.writing) / rendered
        full = prepare + sampling + per_frame * total
        label = "measured" if frames == total else f"extrapolated from {rendered} rendered frames"
        print(f"clip {seconds:g} s = {total} frames")
        print(f"  {'stage':<22} {'seconds':>9} {'frames/s':>9} {'peak RSS MiB':>13} {'peak CUDA MiB':>14}")
        rows = [
            ("crop + audio", prepare, None, results["sampling"]),
            ("sampling (whole clip)", sampling, total, results["sampling"]),
            (f"rendering ({rendered} frames)", streamed.rendering, rendered, results["streaming"]),
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
