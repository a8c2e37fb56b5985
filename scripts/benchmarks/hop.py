"""Sliding-window hop: lip-audio correlation, seam jerk and sampler cost for each hop H on the learning-check model.

    python scripts/learning_check.py seed=0 train.out_dir=runs/hop_check        # the small trained model (CPU)
    python scripts/benchmark.py hop --checkpoint runs/hop_check/checkpoint-001200.pth --seed 0

Samples the held-out synthetic clips of the learning check (their own audio, DDIM `--steps`, seeded per clip) with
each hop and reports, on the raw sampled motion (normalised, before the Kalman smoothing that would hide seams):
lip-audio correlation (Pearson r of the lip channels against the true motion, as the learning check), the mean
|jerk| (third difference, all 70 channels) at the window joins and elsewhere with their ratio (1 = a join is as
smooth as any other frame), and the sampling time per second of speech. Without --checkpoint a randomly
initialised model of the same size is used (the correlation is then meaningless; the cost is not).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None, help="learning-check checkpoint (default: random weights)")
    parser.add_argument("--seed", type=int, default=0, help="the learning check's seed (its data and model config)")
    parser.add_argument("--hops", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--clips", type=int, default=8, help="held-out clips sampled")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps per window")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")


def join_frames(num_frames: int, window: int, hop: int) -> list[int]:
    """The first new frame of each window after the first (W, W + H, ...) below num_frames: where windows meet."""
    return list(range(window, num_frames, hop))


def jerk(motion: np.ndarray) -> np.ndarray:
    """Motion (T, D) -> |third difference| (T, ) mean over channels; entry j spans frames j-2..j+1 (NaN at the ends)."""
    out = np.full(motion.shape[0], np.nan)
    third = motion[3:] - 3 * motion[2:-1] + 3 * motion[1:-2] - motion[:-3]  # frames j-2, j-1, j, j+1 for j = 2..
    out[2:-1] = np.abs(third).mean(axis=1)
    return out


def seam_jerk(motions: list[np.ndarray], window: int, hop: int) -> tuple[float, float]:
    """Mean |jerk| at the joins (between frames j-1 and j) and at every other frame, over the clips."""
    at, off = [], []
    for motion in motions:
        j = jerk(motion)
        joins = set(join_frames(motion.shape[0], window, hop))
        at += [j[i] for i in joins if np.isfinite(j[i])]
        off += [j[i] for i in range(len(j)) if i not in joins and np.isfinite(j[i])]
    return float(np.mean(at)) if at else float("nan"), float(np.mean(off))


def run(args: argparse.Namespace) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from kdtalker.config import compose_config
    from kdtalker.data.dataset import MotionWindows
    from kdtalker.data.prepare import prepare_data
    from kdtalker.diffusion import Denoiser, MotionNorm, expression_channels, sample_motion
    from kdtalker.training.config import LearningCheckConfig
    from kdtalker.training.metrics import group_correlation

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = compose_config("learning_check", [f"seed={args.seed}"], LearningCheckConfig)
    model_kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    model_kwargs.pop("_target_")
    if args.checkpoint:
        model = Denoiser.from_pretrained(args.checkpoint, **model_kwargs)
        what = args.checkpoint
    else:
        torch.manual_seed(0)
        model = Denoiser(**model_kwargs).eval()
        what = "random weights (learning-check size)"
    files = prepare_data(cfg.data, build=True)
    val = MotionWindows(files.val, MotionNorm.load(files.norm), int(cfg.data.window), 1, args.seed, train=False)
    clips = val.clips[: args.clips]
    frames = min(len(c.motion) - 1 for c in clips)
    lips = expression_channels(tuple(cfg.data.lip_keypoints))
    scheduler = instantiate(cfg.diffusion)
    print(f"model: {what}; {len(clips)} clips x {frames} frames, {args.steps} DDIM steps, window {model.window}")
    print("| hop H | windows per clip | lip-audio r | jerk at joins | jerk elsewhere | ratio | sampling s / s speech |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for hop in args.hops:
        preds, truths, seconds, windows = [], [], 0.0, []
        for i, clip in enumerate(clips):
            ori = np.concatenate([np.zeros(7, np.float32), clip.kp[0]])
            start = time.perf_counter()
            out = sample_motion(
                model,
                scheduler,
                torch.from_numpy(clip.audio[1 : 1 + frames].copy()),
                torch.from_numpy(clip.motion[0].copy()),
                torch.from_numpy(ori),
                steps=args.steps,
                generator=torch.Generator().manual_seed(args.seed + i),
                hop=hop,
                window_callback=lambda k, ref, x0: windows.append(k),
                progress=False,
            )
            seconds += time.perf_counter() - start
            preds.append(out.numpy())
            truths.append(clip.motion[1 : 1 + frames])
        r = group_correlation(preds, truths, lips)
        at, off = seam_jerk(preds, model.window, hop)
        per_second = seconds / (len(clips) * frames / args.fps)
        per_clip = len(windows) // len(clips)
        print(f"| {hop} | {per_clip} | {r:.3f} | {at:.4f} | {off:.4f} | {at / off:.2f} | {per_second:.3f} |")
