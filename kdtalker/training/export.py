"""A trained run -> a checkpoint folder that inference and evaluation read like the official one.

    runs/train/checkpoint-XXXXXX.pth + config.yaml  +  base/ (official weights)
      -> out/KDTalker.pth   {'model': point_model.model.*, 'model_ema': {}}: the run's model (or EMA) weights only
         out/norm.npz       the run's normalisation statistics (its data config's norm file)
         out/model.yaml     {model: the run's model config} (+ diffusion: the run's sampler for one-pass generators)
         out/<the rest>     every other weight file of base, symlinked (or copied)

The folder is built beside `out` under a hidden name and renamed into place only when complete and checked, so a
failed or interrupted export leaves nothing half-written (a killed one's leftovers go at the next export there).
Which files come from `base` and how they are checked is the pipeline's listing, passed in as `BaseFiles`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import yaml
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kdtalker.data.layouts import layout_named
from kdtalker.data.prepare import prepare_data
from kdtalker.diffusion.checkpoint import kdtalker_state_dict, official_layout, write_checkpoint
from kdtalker.diffusion.motion import MotionNorm
from kdtalker.errors import CheckpointError, ConfigError, KDTalkerError, OutputError
from kdtalker.fileio import atomic_path
from kdtalker.motion_layout import MotionLayout
from kdtalker.training.checkpoint import CHECKPOINT_PATTERN, checkpoint_path, checkpoints_newest_first, load_checkpoint

MODEL_FILE = "KDTalker.pth"
NORM_FILE = "norm.npz"
MODEL_CONFIG_FILE = "model.yaml"  # read by TalkingHeadPipeline.from_config
RUN_CONFIG_FILE = "config.yaml"  # the trainer's resolved config of the run
STAGING_SUFFIX = ".part"


@dataclass(frozen=True)
class BaseFiles:
    """The files an exported folder takes from `base`, and the checks that make an unusable folder fail early."""

    required: tuple[str, ...]  # paths relative to base; each must pass check_file
    optional: tuple[str, ...] = ()  # linked when present (e.g. the ONNX crop models)
    check_file: Callable[[Path, str], Any] | None = None  # (base, relpath) -> raises CheckpointError when wrong
    # the finished folder and the run's motion layout (data.layout), before the folder is moved into place
    check_folder: Callable[[Path, MotionLayout], Any] | None = None


@dataclass
class ExportResult:
    """What an export wrote."""

    out: Path
    checkpoint: Path  # the run's checkpoint the weights come from
    step: int
    ema: bool
    norm: Path  # the run's norm file that was copied
    model_config: dict[str, Any]  # the content of model.yaml
    linked: list[str] = field(default_factory=list)  # base files symlinked
    copied: list[str] = field(default_factory=list)  # base files copied (link=false, or symlinks failed)
    link_error: str | None = None  # why symlinks failed, when they did


def select_checkpoint(run: str | os.PathLike, step: int | None = None) -> Path:
    """The run's checkpoint-{step:06d}.pth (the newest when step is None); CheckpointError naming what exists."""
    run = Path(run)
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} does not exist; pass run=DIR, the train.out_dir of a training run")
    found = checkpoints_newest_first(run)
    if not found:
        raise CheckpointError(
            f"no checkpoint-XXXXXX.pth in run folder {run}; train first (python train.py train.out_dir={run}) "
            "or pass the run=DIR that holds them"
        )
    if step is None:
        return found[0]
    path = checkpoint_path(run, step)
    if path not in found:
        steps = sorted(int(CHECKPOINT_PATTERN.fullmatch(p.name).group(1)) for p in found)
        raise CheckpointError(
            f"run {run} has no checkpoint for step={step} ({path.name}); available steps: "
            f"{', '.join(map(str, steps))} (or leave step out for the newest)"
        )
    return path


def read_run_config(run: str | os.PathLike) -> DictConfig:
    """The run's resolved config (`config.yaml`, saved by the trainer); ConfigError when missing or unreadable."""
    path = Path(run) / RUN_CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path} not found: the run's resolved config (written by train.py next to its checkpoints) is needed "
            "to rebuild its model and find its norm statistics"
        )
    try:
        cfg = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not a readable config ({_first_line(exc)})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path} is not a training config (not a mapping)")
    return cfg


def model_config(run_cfg: DictConfig, source: str = RUN_CONFIG_FILE) -> dict[str, Any]:
    """The content of model.yaml: {'model': run model config} (+ 'diffusion' for a generator kind other than
    diffusion, whose sampler is the run's diffusion node)."""
    node: dict[str, Any] = {"model": _target_node(run_cfg, "model", source)}
    generator = run_cfg.get("generator")
    kind = generator.get("kind", "diffusion") if isinstance(generator, DictConfig) else (generator or "diffusion")
    if kind != "diffusion":
        node["diffusion"] = _target_node(run_cfg, "diffusion", source, f" (generator.kind={kind} samples with it)")
    return node


def run_norm(run_cfg: DictConfig, source: str = RUN_CONFIG_FILE) -> Path:
    """The norm file of the run's data config (what the trainer normalised with), checked readable."""
    data = run_cfg.get("data")
    if not isinstance(data, DictConfig):
        raise ConfigError(f"{source} has no data node: the run's norm statistics cannot be found")
    try:
        norm = prepare_data(data, build=False).norm
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: data: {_first_line(exc)}") from None
    except KDTalkerError as exc:
        raise CheckpointError(
            f"the run's norm statistics (data config of {source}; paths are relative to the folder train.py ran in): "
            f"{exc}"
        ) from None
    MotionNorm.load(norm, run_layout(run_cfg, source))  # CheckpointError naming the file: not a norm.npz of the run
    return norm


def run_layout(run_cfg: DictConfig, source: str = RUN_CONFIG_FILE) -> MotionLayout:
    """The motion layout the run trained in (data.layout; runs from before it had one: LivePortrait's)."""
    return layout_named(run_cfg.data.get("layout", "liveportrait"), f"{source}: data.layout")


def model_weights(ckpt: Any, source: str, ema: bool = False) -> dict[str, torch.Tensor]:
    """The official 'model' entry of a training checkpoint (ema: its EMA weights under the same keys), copied."""
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping) or not ckpt["model"]:
        raise CheckpointError(f"{source} is not a training checkpoint: it has no 'model' state dict")
    state: Mapping[str, Any] = ckpt["model"]
    if ema:
        entry = ckpt.get("model_ema")
        if not entry:
            raise CheckpointError(
                f"{source} has no EMA weights (its 'model_ema' entry is empty: the run trained with "
                "train.ema.enabled=false); export with ema=false"
            )
        if not isinstance(entry, Mapping):
            raise CheckpointError(f"the 'model_ema' entry of {source} is not a state dict")
        state = entry  # our trainer's EMA: a state dict under the model's keys
        if "shadow_params" in entry:  # a torch_ema state (the official trainer): mapped onto the model's keys
            state = official_layout(kdtalker_state_dict(ckpt, source, ema=True))["model"]
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: the weights hold non-tensor entries (e.g. {bad[0]!r})")
    return {k: v.detach().clone() for k, v in state.items()}


def check_loads(node: Mapping[str, Any], ckpt: Mapping[str, Any], source: str) -> None:
    """The checkpoint dict loads strictly into the model that `node` (model.yaml's model) describes."""
    kwargs = dict(node)
    try:
        model_class = get_class(kwargs.pop("_target_"))
    except Exception as exc:  # noqa: BLE001 - hydra wraps import errors in its own types
        raise ConfigError(f"model._target_ of {source} cannot be imported: {_first_line(exc)}") from None
    try:
        model_class.from_pretrained(ckpt, "cpu", **kwargs)
    except TypeError as exc:
        raise ConfigError(f"the model config of {source} does not build {model_class.__name__}: {exc}") from None
    except CheckpointError as exc:
        raise CheckpointError(f"the weights do not fit the model config of {source}: {exc}") from None


def export_checkpoint(
    run: str | os.PathLike,
    out: str | os.PathLike,
    base: str | os.PathLike,
    files: BaseFiles,
    step: int | None = None,
    ema: bool = False,
    link: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Write the checkpoint folder `out` from the run's checkpoint (newest, or `step`) and `base`'s other files."""
    run, out, base = Path(run), Path(out), Path(base)
    _check_out(out, overwrite, {"base": base, "run": run})
    checkpoint = select_checkpoint(run, step)
    run_cfg = read_run_config(run)
    source = str(run / RUN_CONFIG_FILE)
    node = model_config(run_cfg, source)
    if not base.is_dir():
        raise CheckpointError(f"base folder {base} does not exist; pass base=DIR, the official checkpoints folder")
    for relpath in files.required:
        if files.check_file is not None:
            files.check_file(base, relpath)
        elif not (base / relpath).is_file():
            raise CheckpointError(f"missing weight file {base / relpath} in base={base}")
    take = [*files.required, *(p for p in files.optional if (base / p).is_file())]
    norm = run_norm(run_cfg, source)

    ckpt = load_checkpoint(checkpoint)
    exported = {"model": model_weights(ckpt, str(checkpoint), ema), "model_ema": {}}
    if ckpt.get("generator_kind"):  # a Table 4 generator: inference refuses to sample it as a diffusion model
        exported["generator_kind"] = ckpt["generator_kind"]
    del ckpt  # the optimizer state is not needed any more
    check_loads(node["model"], exported, f"{source} (weights of {checkpoint.name})")

    result = ExportResult(out, checkpoint, _step_of(checkpoint), ema, norm, node)
    with _staged_folder(out) as folder:
        write_checkpoint(exported, folder / MODEL_FILE)
        with atomic_path(folder / NORM_FILE, "the norm statistics") as tmp:
            shutil.copyfile(norm, tmp)
        weights = "EMA weights" if ema else "weights"
        header = f"# model config of {checkpoint} ({weights}), written by scripts/export_checkpoint.py\n"
        with atomic_path(folder / MODEL_CONFIG_FILE, "the model config") as tmp:
            tmp.write_text(header + OmegaConf.to_yaml(OmegaConf.create(node)))
        for relpath in take:
            _place(base / relpath, folder / relpath, link, result, relpath)
        if files.check_folder is not None:
            files.check_folder(folder, run_layout(run_cfg, source))
    return result


def _target_node(cfg: DictConfig, key: str, source: str, why: str = "") -> dict[str, Any]:
    """cfg[key] resolved, as a plain dict with a `_target_`; ConfigError naming `source` otherwise."""
    node = cfg.get(key)
    try:
        value = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {key}: {_first_line(exc)}") from None
    if not isinstance(value, dict) or not isinstance(value.get("_target_"), str):
        raise ConfigError(f"{source} has no {key} node with a _target_{why}; is it the config.yaml of a train.py run?")
    return value


def _step_of(checkpoint: Path) -> int:
    return int(CHECKPOINT_PATTERN.fullmatch(checkpoint.name).group(1))


def _first_line(exc: BaseException) -> str:
    return next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)


def _check_out(out: Path, overwrite: bool, others: Mapping[str, Path]) -> None:
    """OutputError/ConfigError before any work: out is a file, a non-empty folder (without overwrite), or holds
    base or the run (which overwrite would delete)."""
    if out.is_symlink():
        raise OutputError(f"out={out} is a symlink; give the real folder (or a new name) as out")
    if out.exists() and not out.is_dir():
        raise OutputError(f"out={out} exists and is not a folder; choose a new folder name")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(
            f"out={out} exists and is not empty; choose a new folder or pass overwrite=true (replaces it)"
        )
    real = Path(os.path.realpath(out))
    for key, path in others.items():
        other = Path(os.path.realpath(path))
        if real == other or real in other.parents:
            raise ConfigError(f"out={out} is or holds {key}={path}; write the export to a folder of its own")


def _is_stale(entry: Path, name: str) -> bool:
    """A staging folder `.<name>.<pid>.<hex>[.old].part` left by an export whose process is gone."""
    if not entry.name.startswith(f".{name}.") or not entry.name.endswith(STAGING_SUFFIX):
        return False
    parts = entry.name[len(name) + 2 : -len(STAGING_SUFFIX)].split(".")
    if len(parts) not in (2, 3) or not parts[0].isdigit() or len(parts[1]) != 8 or parts[2:] not in ([], ["old"]):
        return False
    try:
        os.kill(int(parts[0]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # someone else's live process / not a pid
        return False
    return False


@contextlib.contextmanager
def _staged_folder(out: Path) -> Iterator[Path]:
    """Yield a hidden sibling folder; on success it replaces `out` (moved aside first), on failure it is removed."""
    missing = next((p for p in [*reversed(out.parents), out] if not p.exists()), None)
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        for entry in out.parent.iterdir():
            if entry.is_dir() and not entry.is_symlink() and _is_stale(entry, out.name):
                shutil.rmtree(entry, ignore_errors=True)
    token = f"{os.getpid()}.{secrets.token_hex(4)}"
    folder = out.parent / f".{out.name}.{token}{STAGING_SUFFIX}"
    try:
        folder.mkdir(mode=0o777)  # the umask decides, as for any new folder
        yield folder
        if out.exists():
            old = out.parent / f".{out.name}.{token}.old{STAGING_SUFFIX}"
            os.rename(out, old)
            try:
                os.rename(folder, out)
            except BaseException:
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(folder, out)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        if missing is not None and missing != out and missing.is_dir():
            shutil.rmtree(missing, ignore_errors=True)  # parent folders this export created hold nothing else
        raise


def _place(source: Path, target: Path, link: bool, result: ExportResult, relpath: str) -> None:
    """Symlink `target` to `source` (relative, real paths), or copy it when link is off or symlinks fail."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if link and result.link_error is None:
        pointer = os.path.relpath(os.path.realpath(source), os.path.realpath(target.parent))
        try:
            os.symlink(pointer, target)
            result.linked.append(relpath)
            return
        except OSError as exc:  # a file system without symlinks (FAT, some network shares): copy instead
            result.link_error = f"{exc.strerror or exc}"
    shutil.copyfile(source, target)
    result.copied.append(relpath)
