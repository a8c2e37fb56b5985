"""Resolve a data config (kdtalker/configs/data/) to train/val clips (shard lists or packed folders), data.select's
choice and norm stats; builds synthetic data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdtalker.data.clip_index import read_index
from kdtalker.data.layouts import layout_named
from kdtalker.data.norm_stats import write_norm
from kdtalker.data.packed import PackedClips, is_packed
from kdtalker.data.select import select_clips
from kdtalker.data.shards import shard_paths
from kdtalker.data.synthetic import META_FILE, generate_synthetic
from kdtalker.errors import ConfigError, KDTalkerError, OutputError
from kdtalker.fileio import atomic_path

GENERATED_NORM = "norm.npz"  # the statistics of the generated train shards, inside data.root
ROOT_MARK = "synthetic_norm.json"  # written into data.root with the statistics: they are this generator's own


@dataclass
class DataFiles:
    """Shards (or packed folders) and statistics a training run reads, and what data.select made of them."""

    train: list[Path] | PackedClips
    val: list[Path] | PackedClips
    norm: Path
    notes: list[str] = field(default_factory=list)  # one line per split from data.select, for the log


def prepare_data(cfg, build: bool = True) -> DataFiles:
    """cfg: train_dir, val_dir, norm, layout, lip_keypoints, optional synthetic {seed, num_train, num_val, min_frames,
    max_frames, eye_keypoints} + root.

    With `synthetic` set (and build=True) the shards are generated (deterministic in the seed, reused when
    present). When `norm` is the generated `root/norm.npz` it is computed from the train shards; any other norm
    file is an input: read, never written.
    """
    train_dir, val_dir, norm = Path(cfg.train_dir), Path(cfg.val_dir), Path(cfg.norm)
    synth = cfg.get("synthetic")
    if synth is not None and build:
        _build_synthetic(cfg, synth, train_dir, val_dir, norm)
    train, val = _clips(train_dir), _clips(val_dir)
    if not len(train):
        raise KDTalkerError(f"no shards (.npz/.mat) in {train_dir}; run scripts/extract.py first")
    if not norm.is_file():
        raise KDTalkerError(
            f"normalisation statistics {norm} not found; run `python scripts/compute_norm.py shards={train_dir} "
            f"out={norm}` (or point data.norm at the official dataset_process/norm.npz)"
        )
    notes = []
    rule = cfg.get("select")
    if rule is not None:
        train, line = _select(train, train_dir, rule)
        notes.append(line)
        if not len(train):
            raise KDTalkerError(f"data.select kept no training clip ({line}); loosen data.select")
    return DataFiles(train, val, norm, notes)


def _clips(folder: Path) -> list[Path] | PackedClips:
    """A packed folder (scripts/pack.py) opened, else the shard files under it."""
    return PackedClips(folder) if is_packed(folder) else shard_paths(folder)


def _select(clips: list[Path] | PackedClips, folder: Path, rule) -> tuple[list[Path] | PackedClips, str]:
    """data.select over a pack's stored scores, or a shard folder's extraction index (by shard name)."""
    if isinstance(clips, PackedClips):
        keep, line = select_clips(
            clips.column("sync_offset"), clips.column("sync_conf"), rule.max_offset, rule.min_confidence
        )
        return clips.subset(np.flatnonzero(keep)), line
    index = read_index(folder)
    records = [index.get(p.relative_to(folder).with_suffix("").as_posix(), {}) for p in clips]
    scores = [[np.nan if r.get(k) is None else r[k] for r in records] for k in ("sync_offset", "sync_conf")]
    keep, line = select_clips(
        np.asarray(scores[0], float), np.asarray(scores[1], float), rule.max_offset, rule.min_confidence
    )
    return [p for p, k in zip(clips, keep) if k], line


def _build_synthetic(cfg, synth, train_dir: Path, val_dir: Path, norm: Path) -> None:
    """Generate the shards; (re)compute root/norm.npz when it is the file read and this generator's own."""
    if not cfg.get("root"):
        raise ConfigError("data.root is required with data.synthetic: the folder the generated data goes to")
    root = Path(cfg.root)
    generated = root / GENERATED_NORM
    reads_generated = norm.resolve() == generated.resolve()
    # Decided before any shard is written: a train folder made now must not vouch for a norm.npz already there.
    own = not generated.exists() or (root / ROOT_MARK).is_file() or (root / "train" / META_FILE).is_file()
    if reads_generated and not own:
        raise OutputError(
            f"{generated} exists and was not made by the synthetic data generator; choose a new data.root "
            "(or name your statistics as input with data.norm=FILE)"
        )
    common = dict(
        seed=int(synth.seed),
        min_frames=int(synth.min_frames),
        max_frames=int(synth.max_frames),
        layout=layout_named(cfg.layout, "data.layout"),
        lips=tuple(int(k) for k in cfg.lip_keypoints),
        eyes=tuple(int(k) for k in synth.eye_keypoints),
    )
    made = generate_synthetic(train_dir, int(synth.num_train), first_index=0, what="data.train_dir", **common)
    generate_synthetic(val_dir, int(synth.num_val), first_index=int(synth.num_train), what="data.val_dir", **common)
    if not reads_generated:
        return  # the user's own statistics: an input, never written
    newest = max(p.stat().st_mtime for p in made)
    if not generated.exists() or generated.stat().st_mtime < newest:
        root.mkdir(parents=True, exist_ok=True)
        with atomic_path(root / ROOT_MARK, "the synthetic data's record") as tmp:
            tmp.write_text(json.dumps({"norm": GENERATED_NORM, "train_dir": str(train_dir)}))
        write_norm(shard_paths(train_dir), generated)
