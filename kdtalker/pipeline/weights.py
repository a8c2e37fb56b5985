"""The official weight folder: which file goes where, and a quick check of it before any work starts.

`check_checkpoint_dir(root)` looks at every required file without loading its tensors (zip directory +
memory-mapped key listing) and raises one CheckpointError naming the file, what is wrong and where the
right file goes. The real loading (strict, with shape checks) is done afterwards by each part's loader.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kdtalker.diffusion.motion import MotionNorm
from kdtalker.errors import CheckpointError
from kdtalker.motion_layout import MotionLayout
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT
from kdtalker.safeload import load_untrusted, refuse_hostile

README = "checkpoints/README.md"


def _flat_keys(obj: Any) -> list[str]:
    return [k for k in obj if isinstance(k, str)] if isinstance(obj, dict) else []


def _starts(prefix: str, container: str | None = None) -> Callable[[Any], bool]:
    def check(obj: Any) -> bool:
        if container is not None:
            obj = obj.get(container) if isinstance(obj, dict) else None
        return any(k.startswith(prefix) for k in _flat_keys(obj))

    return check


def _has_entries(*names: str) -> Callable[[Any], bool]:
    return lambda obj: isinstance(obj, dict) and all(n in obj for n in names)


def _appearance(obj: Any) -> bool:
    keys = _flat_keys(obj)
    return any(k.startswith("first.conv") for k in keys) and any(k.startswith("resblocks_3d") for k in keys)


def _spade(obj: Any) -> bool:
    return any(k.startswith("G_middle_0") for k in _flat_keys(obj))


@dataclass(frozen=True)
class WeightFile:
    """One official file: its path relative to the checkpoint folder, what it is, where it comes from, a key test."""

    relpath: str
    what: str
    source: str
    looks_right: Callable[[Any], bool]


_LP = "KwaiVGI/LivePortrait on Hugging Face (https://huggingface.co/KwaiVGI/LivePortrait, folder liveportrait/)"
_KD = "the KDTalker release (https://huggingface.co/ChaolongYang/KDTalker)"

WEIGHT_FILES: tuple[WeightFile, ...] = (
    WeightFile(
        "liveportrait/base_models/appearance_feature_extractor.pth",
        "LivePortrait appearance feature extractor",
        _LP,
        _appearance,
    ),
    WeightFile(
        "liveportrait/base_models/motion_extractor.pth", "LivePortrait motion extractor", _LP, _starts("detector.")
    ),
    WeightFile(
        "liveportrait/base_models/warping_module.pth",
        "LivePortrait warping module",
        _LP,
        _starts("dense_motion_network."),
    ),
    WeightFile("liveportrait/base_models/spade_generator.pth", "LivePortrait SPADE generator", _LP, _spade),
    WeightFile(
        "liveportrait/retargeting_models/stitching_retargeting_module.pth",
        "LivePortrait stitching/retargeting MLPs",
        _LP,
        _has_entries("retarget_shoulder", "retarget_mouth", "retarget_eye"),
    ),
    WeightFile(
        "wav2lip.pth",
        "Wav2Lip (its audio encoder)",
        _KD + " or Rudrabha/Wav2Lip's wav2lip.pth",
        _starts("module.audio_encoder.", "state_dict"),
    ),
    WeightFile("KDTalker.pth", "KDTalker diffusion model", _KD, _starts("point_model.model.", "model")),
)
NORM_FILE = "norm.npz"
# Face-vid2vid (Table 5): the renderer's own file, read by its loader (renderer.weights); not on the Hugging Face Hub
FACEVID2VID_WEIGHTS = "facevid2vid/SadTalker_V0.0.2_256.safetensors"
FACEVID2VID_SOURCE = (
    "the v0.0.2-rc release of OpenTalker/SadTalker on GitHub "
    "(https://github.com/OpenTalker/SadTalker/releases/tag/v0.0.2-rc; not on the KDTalker Hub)"
)


def required_files(layout: MotionLayout) -> tuple[WeightFile, ...]:
    """The files of WEIGHT_FILES a run with this renderer layout reads (another renderer: no LivePortrait files)."""
    if layout == LIVEPORTRAIT_LAYOUT:
        return WEIGHT_FILES
    return tuple(spec for spec in WEIGHT_FILES if not spec.relpath.startswith("liveportrait/"))


# Optional: LivePortrait's face crop (insightface detector + 106 landmarks). LivePortrait's own landmark.onnx
# (203 points) only feeds its eye/lip retargeting, which KDTalker does not use, so it is not needed.
CROP_FILES = {
    "detector": "insightface/models/buffalo_l/det_10g.onnx",
    "landmark106": "insightface/models/buffalo_l/2d106det.onnx",
}


def _peek(path: Path) -> Any:
    """Safely unpickle a zip checkpoint with memory-mapped storages (no tensor data read); None for legacy files."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            magic = fh.read(2)
        if magic[:1] == b"\x80":  # a pre-1.6 pickle checkpoint: too costly to peek; its loader checks it
            refuse_hostile(path, "weight file")  # but a hostile one is refused now (its globals are read, not run)
            return None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (unknown format); download it again")
    return load_untrusted(path, "weight file", mmap=True)


def _identify(obj: Any) -> str | None:
    for spec in WEIGHT_FILES:
        try:
            if spec.looks_right(obj):
                return spec.relpath
        except Exception:  # noqa: BLE001 - a foreign object may break any test; it just does not match
            continue
    return None


def check_weight_file(root: Path, spec: WeightFile) -> Path:
    """Check one file of WEIGHT_FILES under `root`; return its path or raise CheckpointError."""
    path = root / spec.relpath
    where = f"put {spec.what} ({Path(spec.relpath).name}, from {spec.source}) at {path}; see {README}"
    if not path.is_file():
        raise CheckpointError(f"missing weight file {path}: {where}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weight file {path} is empty: {where}")
    try:
        obj = _peek(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; {where}") from None
    if obj is not None and not spec.looks_right(obj):
        other = _identify(obj)
        looks = f"it looks like {other}" if other else "its contents are not what this file holds"
        raise CheckpointError(f"weight file {path} is not {spec.what} ({looks}): {where}")
    return path


def check_norm_file(path: Path, layout: MotionLayout = LIVEPORTRAIT_LAYOUT) -> Path:
    """Check the normalisation statistics norm.npz of the layout (entries, sizes, finite positive stds) -> its path."""
    where = f"put the official norm.npz (shipped in this repository as checkpoints/norm.npz) at {path}; see {README}"
    if layout != LIVEPORTRAIT_LAYOUT:
        where = (
            f"put the {layout.name} model's norm.npz (scripts/compute_norm.py shards=DIR out=FILE on its "
            f"{layout.name} shards) at {path}"
        )
    if not path.is_file():
        raise CheckpointError(f"missing {path}: {where}")
    try:
        MotionNorm.load(path, None if layout == LIVEPORTRAIT_LAYOUT else layout)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}: {where}") from None
    return path


def check_checkpoint_dir(root: str | os.PathLike, layout: MotionLayout = LIVEPORTRAIT_LAYOUT) -> dict[str, Path]:
    """Check every file a run with the renderer `layout` reads under `root` (another renderer's own file: its loader)
    -> {relative path: absolute path}; CheckpointError listing every missing file, or naming the first bad one."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(
            f"checkpoint folder {root} does not exist; create it and put the official weights in it (see {README}), "
            "or pass checkpoint_dir=PATH"
        )
    missing = missing_weight_files(root, layout)
    if len(missing) > 1:  # all of them at once: a fresh clone would otherwise take one run per file
        raise CheckpointError(
            f"{len(missing)} weight files are missing in {root}; put each where shown (see {README}; with internet: "
            f"download=auto fetches them on first use, or python scripts/download_weights.py dir={root}):",
            details=tuple(f"{root / relpath}: {what}" for relpath, what in missing),
        )
    found = {spec.relpath: check_weight_file(root, spec) for spec in required_files(layout)}
    found[NORM_FILE] = check_norm_file(root / NORM_FILE, layout)
    return found


def check_renderer_file(path: str | os.PathLike | None, layout: MotionLayout) -> None:
    """CheckpointError when the weight file a renderer config names (Face-vid2vid's `weights`) is absent or empty,
    saying where to get it; None (LivePortrait: its files are in WEIGHT_FILES) checks nothing."""
    if path is None or layout == LIVEPORTRAIT_LAYOUT:
        return
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise CheckpointError(
            f"{'missing' if not path.is_file() else 'empty'} {layout.name} renderer weights {path}: download "
            f"{Path(FACEVID2VID_WEIGHTS).name} from {FACEVID2VID_SOURCE} and put it there "
            f"(or set renderer.weights=PATH); see {README}"
        )


def renderer_weights(
    root: str | os.PathLike, layout: MotionLayout = LIVEPORTRAIT_LAYOUT, renderer_file: str | os.PathLike | None = None
) -> str:
    """The files to fetch again when rendered frames come out broken: the renderer's weights (LivePortrait's folder
    under `root`, or the file another renderer's config names) and the norm file, as one phrase."""
    root = Path(root)
    if layout == LIVEPORTRAIT_LAYOUT:
        files = f"the LivePortrait weights under {root / 'liveportrait'}"
    else:
        files = f"the {layout.name} renderer weights" + (f" {renderer_file}" if renderer_file is not None else "")
    return f"{files} (or {root / NORM_FILE})"


def crop_model_files(root: str | os.PathLike) -> dict[str, Path]:
    """The optional ONNX crop models under `root` -> {role: path}; CheckpointError naming the first missing one."""
    root = Path(root)
    paths = {role: root / rel for role, rel in CROP_FILES.items()}
    for role, path in paths.items():
        if not path.is_file():
            raise CheckpointError(
                f"crop=insightface needs {path} ({Path(CROP_FILES[role]).name}, "
                f"from {_LP.replace('folder liveportrait/', 'folder insightface/')}); "
                f"put it there or use crop=dlib (no download needed); see {README}"
            )
    return paths


def missing_weight_files(root: str | os.PathLike, layout: MotionLayout = LIVEPORTRAIT_LAYOUT) -> list[tuple[str, str]]:
    """The required files absent under `root` -> [(relative path, 'what it is, from where')] (no file is read)."""
    root = Path(root)
    files = required_files(layout)
    missing = [(s.relpath, f"{s.what}, from {s.source}") for s in files if not (root / s.relpath).is_file()]
    if not (root / NORM_FILE).is_file():
        made = "shipped in this repository" if layout == LIVEPORTRAIT_LAYOUT else "made by scripts/compute_norm.py"
        missing.append((NORM_FILE, f"normalisation statistics of KDTalker.pth ({made})"))
    return missing
