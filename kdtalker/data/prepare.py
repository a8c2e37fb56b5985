"""Resolve a data config (configs/data/*.yaml) to train/val shard lists and norm stats; builds synthetic data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdtalker.data.norm_stats import write_norm
from kdtalker.data.shards import shard_paths
from kdtalker.data.synthetic import generate_synthetic
from kdtalker.errors import KDTalkerError


@dataclass
class DataFiles:
    """Shards and statistics a training run reads."""

    train: list[Path]
    val: list[Path]
    norm: Path


def prepare_data(cfg, build: bool = True) -> DataFiles:
    """cfg: train_dir, val_dir, norm, optional synthetic {seed, num_train, num_val, min_frames, max_frames}.

    With `synthetic` set (and build=True) the shards are generated (deterministic in the seed, reused when
    present) and norm stats are computed from the train shards if the norm file is missing.
    """
    train_dir, val_dir, norm = Path(cfg.train_dir), Path(cfg.val_dir), Path(cfg.norm)
    synth = cfg.get("synthetic")
    if synth is not None and build:
        common = dict(seed=int(synth.seed), min_frames=int(synth.min_frames), max_frames=int(synth.max_frames))
        made = generate_synthetic(train_dir, int(synth.num_train), first_index=0, **common)
        generate_synthetic(val_dir, int(synth.num_val), first_index=int(synth.num_train), **common)
        newest = max(p.stat().st_mtime for p in made)
        if not norm.exists() or norm.stat().st_mtime < newest:
            norm.parent.mkdir(parents=True, exist_ok=True)
            write_norm(shard_paths(train_dir), norm)
    train, val = shard_paths(train_dir), shard_paths(val_dir)
    if not train:
        raise KDTalkerError(f"no shards (.npz/.mat) in {train_dir}; run scripts/extract.py first")
    if not norm.is_file():
        raise KDTalkerError(
            f"normalisation statistics {norm} not found; run `python scripts/compute_norm.py shards={train_dir} "
            f"out={norm}` (or point data.norm at the official dataset_process/norm.npz)"
        )
    return DataFiles(train, val, norm)
