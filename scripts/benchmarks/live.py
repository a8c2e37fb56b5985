"""Live latency: how long after its audio a frame of a live session comes out, split by where it waits.

    python scripts/benchmark.py live                               # random weights, CPU: hops 8, 16, 64
    python scripts/benchmark.py live --checkpoint-dir checkpoints --device cuda --frames 16

A frame waits for (1) the mel window's look-ahead (its 80x16 window reaches past its own audio: 120 ms at 25 fps),
(2) the rest of its sampling window (a window of hop H is sampled when its last row is final: up to H - 1 frames),
(3) the Kalman smoother's fixed lag (11 frames with the official settings), then for (4) its window's sampling,
(5) its own render batch and (6) transport (the host copy and checks, handing the frame to the H.264 writer).
(1)-(3) are audio that must arrive first, the same on every machine: measured from the frames a session gives out
after each 40 ms push, worst over the frames after the first window (the first window needs 64 frames of audio).
(4)-(6) are compute, timed here: a session with render=False pushes the audio as fast as it takes it (the
sampling of one window), then --frames frames of the sampled motion are rendered one batch at a time and written to
an mp4 (rendering, transport). The hops run in alternating rounds (the machine's speed drifts); medians are shown.
Total = the worst frame's audio wait + one window's sampling + one batch's rendering + its transport: the delay when
every stage keeps up with the speech; where sampling or rendering take longer than the audio they cover (a CPU),
frames fall further behind the longer the speech goes, which the last two columns show.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchmarks.pipeline import REPO, build_pipeline
from benchmarks.weights import write_random_checkpoints

from kdtalker.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-dir", default=None, help="official weights (default: random weights)")
    parser.add_argument("--image", default=str(REPO / "examples" / "astronaut.png"))
    parser.add_argument("--audio", default=str(REPO / "examples" / "speech.wav"), help="looped as long as needed")
    parser.add_argument("--hops", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--windows", type=int, default=3, help="windows sampled after the first, per hop and round")
    parser.add_argument("--frames", type=int, default=2, help="frames rendered and written per hop and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=None, help="render batch (default: the device's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--crop-file", default=None, help="a saved crop for machines without the landmark model")


def _speech(path: str, frames: int) -> np.ndarray:
    """The example speech looped to `frames` video frames (+ the look-ahead), 16 kHz float32."""
    from kdtalker.audio import load_audio

    wav = load_audio(path)
    n = (frames + 4) * 640
    return np.tile(wav, -(-n // len(wav)))[:n]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one(pipe, args: argparse.Namespace, hop: int, wav: np.ndarray, folder: Path) -> dict[str, float]:
    """One hop, one round: audio wait (s, worst after the first window), one window's sampling, one batch's render
    and transport, per frame; and the compute per second of speech of sampling and rendering."""
    from kdtalker.pipeline.compose import driving_keypoints
    from kdtalker.pipeline.frames import finish_batch, render_batch
    from kdtalker.pipeline.video import VideoWriter

    fps, device = 25.0, pipe.device
    session = pipe.live(args.image, render=False, hop=hop)
    window_seconds, wait, motion = [], 0.0, []
    for i in range(0, len(wav), 640):
        _sync(device)
        start = time.perf_counter()
        pieces = session.push(wav[i : i + 640])
        _sync(device)
        if pieces and motion:  # a window was sampled in this push (not the first: it waits for 64 frames)
            window_seconds.append(time.perf_counter() - start)
        heard = (i + 640) / 16000
        for piece in pieces:
            if motion:
                wait = max(wait, heard - (piece.first + 1) / fps)  # the first frame out, its audio's end
            motion.append(piece.motion)
    session.close()
    motion = torch.cat(motion)
    models, ctl = pipe.load(), session.controls
    source = models.renderer.encode_source(pipe.crop(_image(args.image), ctl).image)
    batch = ctl.batch_size
    render_s, transport_s = [], []
    writer = VideoWriter(folder / f"live_{hop}.mp4", 512, 512, fps, crf=ctl.crf)
    try:
        for first in range(0, args.frames, batch):
            x_d = driving_keypoints(source.info, motion[first : first + batch], mode=ctl.motion_mode, first=motion[:1])
            _sync(device)
            start = time.perf_counter()
            with torch.inference_mode():
                rendered = render_batch(models.renderer, source, x_d, first, ctl, None)
            _sync(device)
            middle = time.perf_counter()
            writer.write(finish_batch(rendered, 512, 512, pipe.checkpoint_dir))
            render_s.append(middle - start)
            transport_s.append(time.perf_counter() - middle)
    finally:
        writer.abort()
    sampling = statistics.median(window_seconds)
    return {
        "wait": wait,
        "sampling": sampling,
        "rendering": statistics.median(render_s),
        "transport": statistics.median(transport_s),
        "sampling_per_s": sampling * fps / hop,  # windows per second of speech x seconds per window
        "rendering_per_s": statistics.median(render_s) * fps / batch,
    }


def _image(path: str) -> np.ndarray:
    from kdtalker.pipeline.image import load_image

    return load_image(path)


def run(args: argparse.Namespace) -> None:
    from kdtalker.audio.streaming import lookahead_samples
    from kdtalker.diffusion.smoothing import StreamingSmoother

    for name in ("hops", "windows", "frames", "rounds", "steps"):
        values = getattr(args, name) if name == "hops" else [getattr(args, name)]
        if min(values) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(args, name)}")
    args.paste_back, args.compile = False, False
    with tempfile.TemporaryDirectory(prefix="kdtalker_bench_live_") as tmp:
        root = args.checkpoint_dir or write_random_checkpoints(Path(tmp) / "ckpt")
        pipe = build_pipeline(args, root)
        pipe.load()
        results: dict[int, list[dict[str, float]]] = {h: [] for h in args.hops}
        for _ in range(args.rounds):
            for hop in args.hops:  # alternating: every round runs every hop
                frames = 64 + (args.windows + 1) * hop
                results[hop].append(_one(pipe, args, hop, _speech(args.audio, frames), Path(tmp)))
    mel = lookahead_samples(0, 25.0) / 16000
    smoothing = pipe.controls.smoothing  # the smoother's lag, with the config's Kalman settings
    smoother = StreamingSmoother(
        pipe.kalman_transition_cov, pipe.kalman_observation_cov * smoothing, smoothing > 0, pipe.layout
    )
    lag = smoother.lag / 25.0
    batch = pipe.controls.updated({}, pipe.device).batch_size
    print(
        f"live latency on {pipe.device} ({pipe.dtype}, {args.steps} DDIM steps, render batch {batch}; medians of "
        f"{args.rounds} alternating rounds; seconds)"
    )
    head = (
        "| hop H | mel look-ahead | window (H - 1 frames) | smoothing lag | sampling | rendering | transport | "
        "total | sampling s / s speech | rendering s / s speech |"
    )
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for hop in args.hops:
        m = {k: statistics.median(r[k] for r in results[hop]) for k in results[hop][0]}
        window = m["wait"] - mel - lag
        total = m["wait"] + m["sampling"] + m["rendering"] + m["transport"]
        print(
            f"| {hop} | {mel:.3f} | {window:.3f} | {lag:.3f} | {m['sampling']:.3f} | {m['rendering']:.3f} | "
            f"{m['transport']:.3f} | {total:.3f} | {m['sampling_per_s']:.3f} | {m['rendering_per_s']:.3f} |"
        )
