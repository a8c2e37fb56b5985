"""Fetch the official weights: `python scripts/download_weights.py [dir=checkpoints] [crop_models=true]`.

The Hub files come through huggingface_hub (its cache, dropped connections resumed, HF_ENDPOINT for a mirror, HF_TOKEN,
HF_HUB_OFFLINE) and are linked into `dir`; files already there are kept and never looked up. norm.npz is not on the
Hub: the repository's copy is used, else it is fetched from the official GitHub repository. Without internet access
it stops with one message listing each missing file and its address (checkpoints/README.md: the manual route).
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
from kdtalker.fileio import atomic_path
from kdtalker.pipeline.hub import fetch_missing, hub_endpoint, hub_files
from kdtalker.pipeline.weights import NORM_FILE

SHIPPED_NORM = Path(__file__).resolve().parent.parent / "checkpoints" / NORM_FILE
NORM_URL = "https://raw.githubusercontent.com/chaolongy/KDTalker/main/dataset_process/norm.npz"


@dataclass
class DownloadConfig:
    """Types of kdtalker/configs/download_weights.yaml (which holds the values)."""

    dir: str = MISSING
    crop_models: bool = MISSING
    timeout: float = MISSING


def sources(crop_models: bool = False) -> dict[str, str]:
    """{path relative to the checkpoint folder: URL} of every official file (plus the ONNX crop models if asked)."""
    endpoint = hub_endpoint()
    urls = {rel: spec.url(endpoint) for rel, spec in hub_files(crop_models).items()}
    urls[NORM_FILE] = NORM_URL
    return urls


def download(url: str, target: Path, timeout: float = 30.0) -> None:
    """Stream `url` to `target` atomically; KDTalkerError with the URL and target when it fails (norm.npz only)."""
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
    for relpath in sources(cfg.crop_models):
        if (root / relpath).is_file():
            print(f"present  {root / relpath}")
    fetch_missing(root, norm_copy=SHIPPED_NORM, crop_models=cfg.crop_models)
    if not (root / NORM_FILE).is_file():  # no shipped copy (a trimmed checkout): the official file on GitHub
        print(f"fetching {root / NORM_FILE} <- {NORM_URL}", flush=True)
        download(NORM_URL, root / NORM_FILE, cfg.timeout)
    print(f"all weights are in {root}")


def cli(argv: list[str] | None = None) -> None:
    """`key=value` overrides of kdtalker/configs/download_weights.yaml -> main, with errors as one line."""
    run(main, "download_weights", DownloadConfig, argv=argv, usage=__doc__)


if __name__ == "__main__":
    cli()
