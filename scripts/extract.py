"""Extract training shards: `python scripts/extract.py videos=DIR out=DIR` (`mat_dir=DIR`: official .mat files).

`torchrun --nproc_per_node=N scripts/extract.py videos=DIR out=DIR` splits the clips over N processes (one GPU
each on CUDA); `shard=i num_shards=n` does the same for job arrays without torchrun. One .npz per clip with
per-frame LivePortrait motion (`renderer=facevid2vid`: Face-vid2vid's, for Table 5) and Wav2Lip audio features
(format: kdtalker/data/__init__.py), in sub-folders that mirror DIR, and per-job index files out/index-*.jsonl
(kdtalker/data/clip_index.py) with SyncNet's offset and confidence per clip (kdtalker/eval/syncnet.py; data.select
uses them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from kdtalker.cli import run
from kdtalker.data.config import ExtractConfig
from kdtalker.data.extract import SyncFn, extract_folder, import_official
from kdtalker.data.jobs import job_position
from kdtalker.errors import ConfigError


def syncnet_fn(path: str, device: torch.device, log=print) -> SyncFn | None:
    """The evaluation's SyncNet as a SyncFn (frames as decoded, the 16 kHz track as int16); None + a note without
    the weights file. Wired here: kdtalker.data may not import kdtalker.eval (tests/test_architecture.py)."""
    if not Path(path).is_file():
        log(
            f"note: no SyncNet weights at {path}: clips are indexed without sync offset/confidence "
            "and data.select keeps them all"
        )
        return None
    from kdtalker.eval.syncnet import sync_scores
    from kdtalker.eval.weights import load_syncnet

    model = load_syncnet(path, device)

    def score(frames: np.ndarray, wav: np.ndarray) -> tuple[int, float]:
        pcm = np.clip(np.round(wav * 32768.0), -32768, 32767).astype(np.int16)
        result = sync_scores(model, np.ascontiguousarray(frames[..., ::-1]), pcm)  # SyncNet takes BGR
        return result.offset, result.conf

    return score


def extract(cfg: DictConfig) -> str:
    """Wire the config to extract_folder / import_official; returns the summary line."""
    if not cfg.out:
        raise ConfigError("give the shard folder: out=DIR")
    if cfg.mat_dir:
        return import_official(cfg.mat_dir, cfg.out, overwrite=cfg.overwrite).check_any_usable().summary()
    if not cfg.videos:
        raise ConfigError("give the folder of clips: videos=DIR (or mat_dir=DIR for official .mat files)")
    shard, num_shards, local_rank = job_position(cfg.shard, cfg.num_shards)
    from kdtalker.audio import SAMPLE_RATE, load_audio
    from kdtalker.audio.checkpoint import load_audio_encoder
    from kdtalker.data.extractors import renderer_motion_fn, wav2lip_audio_fn
    from kdtalker.device import resolve_device

    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())  # one GPU per local process
    motion_fn, layout = renderer_motion_fn(cfg.renderer, cfg.motion_extractor, device)
    audio_fn = wav2lip_audio_fn(load_audio_encoder(cfg.wav2lip, device), cfg.fps, cfg.audio.batch_size)
    sync_fn = syncnet_fn(cfg.syncnet, device, log=print if shard == 0 else (lambda line: None))
    report = extract_folder(
        cfg.videos,
        cfg.out,
        motion_fn,
        audio_fn,
        lambda p: load_audio(p, SAMPLE_RATE, kind="video"),
        fps=cfg.fps,
        size=cfg.size,
        min_frames=cfg.min_frames,
        batch_size=cfg.batch_size,
        overwrite=cfg.overwrite,
        sync_fn=sync_fn,
        shard=shard,
        num_shards=num_shards,
        decode_workers=cfg.decode_workers,
        layout=layout,
    )
    summary = report.check_any_usable().summary()
    return f"job {shard + 1} of {num_shards}: {summary}" if num_shards > 1 else summary


if __name__ == "__main__":
    run(lambda cfg: print(extract(cfg)), "extract", ExtractConfig, usage=__doc__)
