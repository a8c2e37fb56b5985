"""The official weights from the Hugging Face Hub: which repository holds each file, and fetching the missing ones.

`fetch_missing(root)` downloads only what is absent from the checkpoint folder, through huggingface_hub, into its
cache (shared with other tools, a dropped connection resumed by Range, `HF_ENDPOINT` / `HF_TOKEN` / `HF_HUB_OFFLINE`
honoured by huggingface_hub itself), then hard-links (or, across file systems, copies) each file to where the
folder expects it. The folder stays the one place the loaders read: it works offline, and a folder that already
holds every file is never looked up online (not even imported huggingface_hub for).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kdtalker.errors import CheckpointError, ConfigError
from kdtalker.fileio import atomic_path, copy_atomic
from kdtalker.motion_layout import MotionLayout
from kdtalker.pipeline.weights import (
    CROP_FILES,
    NORM_FILE,
    README,
    WEIGHT_FILES,
    check_renderer_file,
    required_files,
)
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

LIVEPORTRAIT_REPO = "KwaiVGI/LivePortrait"
KDTALKER_REPO = "ChaolongYang/KDTalker"
REVISION = "main"
DOWNLOAD_MODES = ("auto", "never")
MIRROR_HINT = "HF_ENDPOINT=https://hf-mirror.com"


@dataclass(frozen=True)
class HubFile:
    """Where one checkpoint file lives on the Hub: repository and path inside it."""

    repo_id: str
    filename: str

    def url(self, endpoint: str) -> str:
        """The file's download address under `endpoint` (for messages and the manual route)."""
        return f"{endpoint.rstrip('/')}/{self.repo_id}/resolve/{REVISION}/{self.filename}"


def hub_files(crop_models: bool = False) -> dict[str, HubFile]:
    """{path relative to the checkpoint folder: HubFile} of every official file on the Hub (+ the ONNX crop models)."""
    files = {}
    for spec in WEIGHT_FILES:
        if spec.relpath.startswith("liveportrait/"):  # LivePortrait's repository has the folder's own layout
            files[spec.relpath] = HubFile(LIVEPORTRAIT_REPO, spec.relpath)
        else:  # the KDTalker release keeps its two files under ckpts/
            files[spec.relpath] = HubFile(KDTALKER_REPO, "ckpts/" + spec.relpath)
    if crop_models:
        for relpath in CROP_FILES.values():
            files[relpath] = HubFile(LIVEPORTRAIT_REPO, relpath)
    return files


def check_download_mode(download: str) -> str:
    """`download` if it is one of DOWNLOAD_MODES; ConfigError naming the key otherwise."""
    if download not in DOWNLOAD_MODES:
        raise ConfigError(
            f"download={download!r} is not a download mode: use download=auto (fetch missing weights from the "
            "Hugging Face Hub) or download=never (use the checkpoint folder as it is)"
        )
    return download


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub address in use: `endpoint`, else huggingface_hub's (HF_ENDPOINT or https://huggingface.co)."""
    if endpoint:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT


def fetch_missing(
    root: str | os.PathLike,
    *,
    download: str = "auto",
    norm_copy: str | os.PathLike | None = None,
    crop_models: bool = False,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    report: Callable[[str], None] = print,
    layout: MotionLayout = LIVEPORTRAIT_LAYOUT,
    renderer_weights: str | os.PathLike | None = None,
) -> list[Path]:
    """Put every official file missing under `root` in place (Hub download; norm.npz from `norm_copy`) -> paths written.

    download="never" changes nothing (the folder check then lists what is missing). A failed download raises one
    CheckpointError listing every file still missing with its address; the folder never holds a partial file.
    layout: the renderer's; another than LivePortrait's needs no LivePortrait file, and its own weight file
    (`renderer_weights`, Face-vid2vid's) is not on the Hub: when absent, one CheckpointError says where to get it.
    """
    check_download_mode(download)
    root = Path(root)
    needed = {spec.relpath for spec in required_files(layout)} | set(CROP_FILES.values())
    wanted = {rel: file for rel, file in hub_files(crop_models).items() if rel in needed}
    if layout != LIVEPORTRAIT_LAYOUT:
        check_renderer_file(renderer_weights, layout)
        norm_copy = None  # the repository's norm.npz holds LivePortrait's 70-d statistics
    missing = [rel for rel in wanted if not (root / rel).is_file()]
    norm_missing = not (root / NORM_FILE).is_file()
    if download == "never" or not (missing or norm_missing):
        return []
    written = _download(root, missing, wanted, endpoint, cache_dir, report) if missing else []
    if norm_missing and norm_copy is not None and Path(norm_copy).is_file():
        # norm.npz is not on the Hub (the official code ships it on GitHub); this repository ships a copy
        root.mkdir(parents=True, exist_ok=True)
        written.append(copy_atomic(norm_copy, root / NORM_FILE, "the norm statistics"))
        report(f"copied {norm_copy} -> {root / NORM_FILE}")
    return written


def _download(
    root: Path,
    missing: list[str],
    wanted: dict[str, HubFile],
    endpoint: str | None,
    cache_dir: str | os.PathLike | None,
    report: Callable[[str], None],
) -> list[Path]:
    """hf_hub_download each of `missing` (a progress bar per file) and place it under `root`."""
    from huggingface_hub import constants, hf_hub_download  # only when something is missing: a full folder needs no Hub
    from tqdm import tqdm

    address = hub_endpoint(endpoint)
    repos = ", ".join(sorted({wanted[rel].repo_id for rel in missing}))
    if not constants.HF_HUB_OFFLINE:  # offline, huggingface_hub only looks in its cache: nothing is downloaded
        report(f"downloading {len(missing)} weight files from the Hugging Face Hub ({address}: {repos}) into {root}")
    written = []
    for done, rel in enumerate(missing):
        spec = wanted[rel]
        try:
            cached = hf_hub_download(
                spec.repo_id,
                spec.filename,
                revision=REVISION,
                endpoint=endpoint,
                cache_dir=cache_dir,
                tqdm_class=tqdm,  # plain tqdm, like the other bars: shown on any stream, off with TQDM_DISABLE=1
            )
        except Exception as exc:  # noqa: BLE001 - huggingface_hub and its HTTP client raise many types; all mean "not here"
            raise _download_error(root, address, missing[done:], wanted, exc) from None
        written.append(_place(Path(cached).resolve(), root / rel))
    return written


def _place(blob: Path, target: Path) -> Path:
    """Hard-link the cached file to `target` (no second copy on disk); copy where links are impossible. Atomic."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, "weight file") as tmp:
        tmp.unlink()
        try:
            os.link(blob, tmp)
        except OSError:  # another file system, or one without hard links
            shutil.copyfile(blob, tmp)
    return target


def _reason(exc: BaseException) -> str:
    """What went wrong, in the user's terms."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    if constants.HF_HUB_OFFLINE or isinstance(exc, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set, so nothing is downloaded"
    if isinstance(exc, GatedRepoError | RepositoryNotFoundError):
        return "the repository is not accessible (log in with `hf auth login` or set HF_TOKEN if it needs access)"
    if isinstance(exc, LocalEntryNotFoundError):  # before EntryNotFoundError: it is one
        return "the Hub cannot be reached (no network, or a proxy or firewall in the way)"
    if isinstance(exc, EntryNotFoundError):
        return "the file is not in the repository"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return first


def _download_error(
    root: Path, address: str, missing: list[str], wanted: dict[str, HubFile], exc: BaseException
) -> CheckpointError:
    return CheckpointError(
        f"{len(missing)} weight files are missing in {root} and could not be downloaded from {address} "
        f"({_reason(exc)}); run again with internet (a mirror: {MIRROR_HINT}), or download each file by hand "
        f"and put it where shown (see {README}; download=never skips the Hub):",
        details=tuple(f"{root / rel} <- {wanted[rel].url(address)}" for rel in missing),
    )
