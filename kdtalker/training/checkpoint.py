"""Training checkpoints: the official dict (model, optimizer, scheduler, epoch, step, best_val, model_ema, cfg)
plus what exact resume needs (RNG states of every process, AMP scaler)."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdtalker.weights import load_torch_file

CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)\.pth")


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    """The official file name: checkpoint-{step:06d}.pth."""
    return Path(out_dir) / f"checkpoint-{step:06d}.pth"


def checkpoints_newest_first(out_dir: str | os.PathLike) -> list[Path]:
    """Every checkpoint-*.pth in `out_dir`, highest step first (temporary .part files are not checkpoints)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out_dir.iterdir() if (m := CHECKPOINT_PATTERN.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint-*.pth with the highest step in `out_dir`, or None."""
    found = checkpoints_newest_first(out_dir)
    return found[0] if found else None


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Python, NumPy, torch CPU (+ CUDA) global RNG states and the training generator's state."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generator": generator.get_state() if generator is not None else None,
    }
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what rng_state captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint on CPU (CheckpointError if missing or unreadable)."""
    return load_torch_file(path, "training checkpoint")
