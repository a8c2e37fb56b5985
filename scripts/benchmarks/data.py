"""Training-data scale: loader memory, start-up and windows/s on packed sets of 1k and 10k clips; extraction speed.

    python scripts/benchmark.py data                                  # 1000 and 10000 clips of 130 frames
    python scripts/benchmark.py data --sizes 1000 10000 --extract-clips 8 --workdir /scratch/bench

Synthetic clips in the real shard format (random values; speaker/video sub-folders and an extraction index with
SyncNet scores) are written, packed (scripts/pack.py's pack_shards) and read by the training loader
(MotionWindows over PackedClips, ResumableSampler, DataLoader) in a fresh process per size: its peak RSS
(VmHWM, reading in the process itself, so every page it touches is counted), its start-up (index read to first
batch) and windows/s, then again with 2 persistent workers. Extraction: --extract-clips generated videos through
scripts/extract.py with randomly initialised full-size networks (the weights do not change the cost) on the
chosen device, with 1 process and with torchrun's 2. Everything is written under --workdir (default: a temporary
folder, removed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="clips per synthetic set")
    parser.add_argument("--frames", type=int, default=130, help="frames per synthetic clip")
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64, help="windows per batch")
    parser.add_argument("--batches", type=int, default=50, help="batches timed per loader")
    parser.add_argument("--extract-clips", type=int, default=8, help="videos for the extraction timing (0: skip)")
    parser.add_argument("--extract-frames", type=int, default=30, help="frames per video (25 fps)")
    parser.add_argument("--device", default="cpu", help="extraction device")
    parser.add_argument("--workdir", default=None, help="where the sets go (default: a temporary folder)")
    parser.add_argument(
        "--baseline-max", type=int, default=1000, help="also time the shard-folder loader (all in memory) up to this"
    )
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: one loader, in a child
    parser.add_argument("--measure-shards", action="store_true", help=argparse.SUPPRESS)


def _status_kib(pid: int | str, key: str) -> int:
    """A /proc/<pid>/status field in KiB (VmHWM: peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _make_set(root: Path, clips: int, frames: int) -> Path:
    """`clips` random clips as shards id<speaker>/<video>/<n>.npz with an extraction index -> the shard folder."""
    from tqdm import tqdm

    from kdtalker.data.shards import MOTION_KEYS, Clip, write_shard

    shards = root / "shards"
    rng = np.random.default_rng(clips)
    lines = []
    for i in tqdm(range(clips), desc=f"write {clips} shards", unit="clip"):
        name = f"id{i // 100:05d}/vid{(i // 10) % 10}/{i % 10 + 1:05d}"
        motion = {k: rng.standard_normal((frames, *s), np.float32) for k, s in MOTION_KEYS.items()}
        path = shards / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_shard(path, Clip(motion, rng.standard_normal((frames + 1, 512), np.float32)))
        record = {"clip": name, "bytes": path.stat().st_size, "sync_offset": int(rng.integers(-3, 4))}
        lines.append(json.dumps({**record, "sync_conf": float(rng.uniform(0, 10))}) + "\n")
    (shards / "index-00000-of-00001.jsonl").write_text("".join(lines))
    return shards


def _measure(args: argparse.Namespace) -> None:
    """Child process: open the pack, iterate the loader, print one JSON line of figures."""
    start = time.perf_counter()
    import torch
    from torch.utils.data import DataLoader

    from kdtalker.data.dataset import MotionWindows
    from kdtalker.data.packed import PackedClips
    from kdtalker.diffusion.motion import MotionNorm
    from kdtalker.training.distributed import DistInfo, ResumableSampler

    torch.set_num_threads(1)
    folder = Path(args.measure)
    if args.measure_shards:  # the shard-folder loader: every clip read and normalised into memory up front
        from kdtalker.data.shards import shard_paths

        t0 = time.perf_counter()
        dataset = MotionWindows(shard_paths(folder / "shards"), MotionNorm.load(folder / "norm.npz"), args.window)
        dataset[0]
        seconds = time.perf_counter() - t0
        print(json.dumps({"startup_s": seconds, "peak_rss_mib": _status_kib("self", "VmHWM") / 1024}))
        return
    imported = time.perf_counter()
    figures: dict[str, float] = {"rss_before_mib": _status_kib("self", "VmRSS") / 1024}
    for workers in (0, 2):
        t0 = time.perf_counter()
        dataset = MotionWindows(PackedClips(folder / "packed"), MotionNorm.load(folder / "norm.npz"), args.window)
        sampler = ResumableSampler(dataset, DistInfo(), seed=0, with_epoch=True)
        if len(sampler) < args.batch:
            raise SystemExit(f"error: {len(dataset)} windows give no batch of {args.batch}; use larger --sizes")
        loader = DataLoader(
            dataset, batch_size=args.batch, sampler=sampler, drop_last=True, num_workers=workers,
            persistent_workers=workers > 0,
        )  # fmt: skip
        it = _epochs(loader, sampler)
        next(it)
        t1 = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        t2 = time.perf_counter()
        if workers == 0:
            figures.update(startup_s=t1 - t0, windows_per_s=args.batches * args.batch / (t2 - t1))
            figures["peak_rss_mib"] = _status_kib("self", "VmHWM") / 1024
        else:
            pids = [w.pid for w in getattr(loader._iterator, "_workers", [])]  # the persistent workers
            figures.update(workers_startup_s=t1 - t0, workers_windows_per_s=args.batches * args.batch / (t2 - t1))
            figures["worker_peak_rss_mib"] = max((_status_kib(p, "VmHWM") for p in pids), default=0) / 1024
        del it, loader
    figures["import_s"] = imported - start
    print(json.dumps(figures))


def _epochs(loader, sampler):
    """Batches over as many epochs as asked for (a small set has few batches per epoch)."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _loader_figures(folder: Path, args: argparse.Namespace, shards: bool = False) -> dict[str, float]:
    cmd = [sys.executable, str(SCRIPTS / "benchmark.py"), "data", "--measure", str(folder)]
    cmd += ["--measure-shards"] if shards else []
    cmd += ["--window", str(args.window), "--batch", str(args.batch), "--batches", str(args.batches)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if done.returncode != 0:
        raise RuntimeError(f"loader measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _extraction(work: Path, args: argparse.Namespace) -> dict[int, float]:
    """Clips/s of scripts/extract.py with 1 process and torchrun's 2 on generated videos."""
    import soundfile as sf
    import torch

    from kdtalker.audio.encoder import AudioEncoder
    from kdtalker.media import write_video
    from kdtalker.renderer import MotionExtractor

    videos, weights = work / "videos", work / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    torch.save(MotionExtractor().state_dict(), weights / "motion_extractor.pth")
    torch.save({"state_dict": {f"module.audio_encoder.{k}": v for k, v in AudioEncoder().state_dict().items()}},
               weights / "wav2lip.pth")  # fmt: skip
    rng = np.random.default_rng(0)
    for i in range(args.extract_clips):
        path = videos / f"id{i % 2:05d}" / f"vid{i // 2}" / "00001.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        wav = work / f"{i}.wav"
        sf.write(
            wav, (0.1 * rng.standard_normal(int(16000 * (args.extract_frames + 2) / 25))).astype(np.float32), 16000
        )
        write_video(path, rng.integers(0, 255, (args.extract_frames, 256, 256, 3), dtype=np.uint8), audio=wav)
    common = [
        str(SCRIPTS / "extract.py"), f"videos={videos}", f"motion_extractor={weights / 'motion_extractor.pth'}",
        f"wav2lip={weights / 'wav2lip.pth'}", f"syncnet={weights / 'none'}", f"device={args.device}", "min_frames=8",
    ]  # fmt: skip
    cores = os.cpu_count() or 1
    rates = {}
    for procs in (1, 2):
        launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                        f"--nproc_per_node={procs}"]  # fmt: skip
        threads = f"torch_threads={max(1, cores // procs)}"
        start = time.perf_counter()
        done = subprocess.run([*launcher, *common, f"out={work / f'out{procs}'}", threads], capture_output=True,
                              text=True, env=dict(os.environ, TQDM_DISABLE="1"))  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"extraction with {procs} processes failed:\n{done.stderr[-3000:]}")
        rates[procs] = args.extract_clips / (time.perf_counter() - start)
    return rates


def run(args: argparse.Namespace) -> None:
    if args.measure:
        return _measure(args)
    from kdtalker.data.norm_stats import write_norm
    from kdtalker.data.packed import pack_shards
    from kdtalker.data.shards import shard_paths

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="kdtalker_bench_data_"))
    try:
        results = {}
        for size in args.sizes:
            folder = work / f"set{size}"
            shards = _make_set(folder, size, args.frames)
            write_norm(shard_paths(shards)[:200], folder / "norm.npz")  # statistics of a few: enough to normalise
            start = time.perf_counter()
            pack_shards(shards, folder / "packed", log=lambda line: None)
            packing = time.perf_counter() - start
            figures = _loader_figures(folder, args)
            results[size] = figures
            print(
                f"{size} clips x {args.frames} frames: pack {size / packing:.0f} clips/s; loader start-up "
                f"{figures['startup_s']:.3f} s, peak RSS {figures['peak_rss_mib']:.1f} MiB, "
                f"{figures['windows_per_s']:.0f} windows/s in-process; 2 persistent workers: "
                f"{figures['workers_windows_per_s']:.0f} windows/s, worker peak RSS "
                f"{figures['worker_peak_rss_mib']:.1f} MiB",
                flush=True,
            )
            if size <= args.baseline_max:
                old = _loader_figures(folder, args, shards=True)
                print(
                    f"{size} clips, shard-folder loader (all in memory): start-up {old['startup_s']:.2f} s, "
                    f"peak RSS {old['peak_rss_mib']:.1f} MiB",
                    flush=True,
                )
            shutil.rmtree(shards)  # the pack is what is read; the disk holds one copy at a time
        if args.extract_clips:
            rates = _extraction(work / "extract", args)
            print(
                f"extraction ({args.extract_clips} clips x {args.extract_frames} frames, 256x256, full-size "
                f"random-weight networks, {args.device}, {os.cpu_count()} cores, model loading included): "
                + ", ".join(f"{p} process{'es' if p > 1 else ''} {r:.2f} clips/s" for p, r in rates.items())
            )
        print("loader peak RSS: " + ", ".join(f"{s} clips {results[s]['peak_rss_mib']:.1f} MiB" for s in args.sizes))
        print("loader start-up: " + ", ".join(f"{s} clips {results[s]['startup_s']:.3f} s" for s in args.sizes))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
