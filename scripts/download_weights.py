"""Fetch the official weights: `python scripts/download_weights.py [dir=checkpoints] [crop_models=true]`.

Files already present are skipped; each download goes to a temporary file renamed only when complete.
Without internet access it stops with one message saying which file to fetch by hand (checkpoints/README.md).
"""

from __future__ import annotations

import shutil
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from kdtalker.cli import run
from kdtalker.errors import KDTalkerError
from kdtalker.fileio import atomic_path, copy_atomic
from kdtalker.pipeline.weights import CROP_FILES, NORM_FILE, WEIGHT_FILES

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
LIVEPORTRAIT = "https://huggingface.co/KwaiVGI/LivePortrait/resolve/main/"
KDTALKER = "https://huggingface.co/ChaolongYang/KDTalker/resolve/main/"
SHIPPED_NORM = Path(__file__).resolve().parent.parent / "checkpoints" / NORM_FILE
NORM_URL = "https://raw.githubusercontent.com/chaolongy/KDTalker/main/dataset_process/norm.npz"


@dataclass
class DownloadConfig:
    """Types of configs/download_weights.yaml (which holds the values)."""

    dir: str = MISSING
    crop_models: bool = MISSING
    timeout: float = MISSING


def sources(crop_models: bool = False) -> dict[str, str]:
    """{path relative to the checkpoint folder: URL} of every official file (plus the ONNX crop models if asked)."""
    urls = {}
    for spec in WEIGHT_FILES:
        if spec.relpath.startswith("liveportrait/"):
            urls[spec.relpath] = LIVEPORTRAIT + spec.relpath
        else:
            urls[spec.relpath] = KDTALKER + "ckpts/" + spec.relpath
    urls[NORM_FILE] = NORM_URL
    if crop_models:
        for relpath in CROP_FILES.values():
            urls[relpath] = LIVEPORTRAIT + relpath
    return urls


def download(url: str, target: Path, timeout: float = 30.0) -> None:
    """Stream `url` to `target` atomically; KDTalkerError with the URL and target when it fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            atomic_path(target) as tmp,
            urllib.request.urlopen(url, timeout=timeout) as response,
            open(tmp, "wb") as out,
        ):
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise KDTalkerError(
            f"could not download {url} ({reason}); without internet access fetch it by hand and put it at {target} "
            "(see checkpoints/README.md)"
        ) from exc


def main(cfg) -> None:
    """Fetch every missing file of `sources()` into cfg.dir."""
    root = Path(cfg.dir)
    for relpath, url in sources(cfg.crop_models).items():
        target = root / relpath
        if target.is_file() and target.stat().st_size > 0:
            print(f"present  {target}")
            continue
        if relpath == NORM_FILE and SHIPPED_NORM.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_atomic(SHIPPED_NORM, target, "the norm statistics")
            print(f"copied   {target} (the statistics shipped with this repository)")
            continue
        print(f"fetching {target} <- {url}", flush=True)
        download(url, target, cfg.timeout)
    print(f"all weights are in {root}")


def cli(argv: list[str] | None = None) -> None:
    """`key=value` overrides of configs/download_weights.yaml -> main, with errors as one line."""
    run(main, CONFIGS, "download_weights", DownloadConfig, argv=argv, usage=__doc__)


if __name__ == "__main__":
    cli()
