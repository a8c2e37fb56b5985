"""The pipeline's constructor arguments from the inference config, with an exported run's own model config.

A `checkpoint_dir/model.yaml` (scripts/export_checkpoint.py) replaces the model group (and the diffusion group when
it has that node): an exported run is rebuilt with its own architecture.
"""

from __future__ import annotations

import copy
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from kdtalker.audio import SAMPLE_RATE
from kdtalker.errors import ConfigError
from kdtalker.pipeline.control import Control
from kdtalker.pipeline.controls import Controls, guidance_of

MODEL_CONFIG_FILE = "model.yaml"  # an exported run's model config (scripts/export_checkpoint.py) in checkpoint_dir


def pipeline_arguments(cfg: Any) -> tuple[dict[str, Any], str | None]:
    """Inference config -> TalkingHeadPipeline's keyword arguments, and a note when model.yaml changed the config.

    renderer: its `_target_` with all its keys (built when the models load); model: its `_target_` class
    loaded from KDTalker.pth with the other keys; diffusion: the scheduler; audio: checkpoint file and batch.
    """
    cfg = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(cfg)
    cfg, note = _with_exported_model(cfg)
    crop = cfg.crop
    nested = ("control", "guidance")
    controls = Controls(
        **{f.name: cfg[f.name] for f in fields(Controls) if f.name in cfg and f.name not in nested},
        control=Control.of(OmegaConf.to_container(cfg.control)),
        guidance=guidance_of(OmegaConf.to_container(cfg.guidance)),
        crop_method=crop.method,
        crop_scale=crop.scale,
        face_index=crop.face_index,
    )
    if int(cfg.audio.sample_rate) != SAMPLE_RATE:
        raise ConfigError(f"audio.sample_rate={cfg.audio.sample_rate}: the Wav2Lip mel is defined at {SAMPLE_RATE}")
    model_kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    try:
        model_class = get_class(model_kwargs.pop("_target_"))
        renderer_factory = instantiate(cfg.renderer, _partial_=True)
        scheduler = instantiate(cfg.diffusion)
    except Exception as exc:  # noqa: BLE001 - instantiate wraps constructor errors in its own types
        detail = next((s for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
        raise ConfigError(f"the inference config could not be built: {detail}") from None
    arguments = dict(
        checkpoint_dir=cfg.checkpoint_dir,
        device=cfg.device,
        dtype=cfg.dtype,
        controls=controls,
        kalman_transition_cov=cfg.kalman.transition_cov,
        kalman_observation_cov=cfg.kalman.observation_cov,
        predictor_path=crop.predictor_path,
        scheduler=scheduler,
        model_class=model_class,
        model_kwargs=model_kwargs,
        renderer_factory=renderer_factory,
        audio_checkpoint=cfg.audio.checkpoint,
        audio_batch_size=cfg.audio.batch_size,
        overlap=cfg.overlap,
    )
    return arguments, note


def exported_model_config(checkpoint_dir: str | os.PathLike) -> DictConfig | None:
    """checkpoint_dir/model.yaml ({model: {_target_, ...}, optional diffusion: {_target_, ...}}), None when absent."""
    path = Path(checkpoint_dir) / MODEL_CONFIG_FILE
    if not path.exists():
        return None
    how = "it is written by scripts/export_checkpoint.py; export the run again or remove the file"
    try:
        node = OmegaConf.load(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as exc:
        detail = next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
        raise ConfigError(f"{path} is not a readable model config ({detail}); {how}") from None
    for key in ("model", "diffusion"):
        value = node.get(key) if isinstance(node, DictConfig) else None
        if (key == "model" or value is not None) and not (
            isinstance(value, DictConfig) and isinstance(value.get("_target_"), str)
        ):
            raise ConfigError(f"{path} is not a model config: it needs a mapping with {key}._target_; {how}")
    return node


def _with_exported_model(cfg: DictConfig) -> tuple[DictConfig, str | None]:
    """cfg with the model (and diffusion) nodes of checkpoint_dir/model.yaml, and a note when they change cfg."""
    exported = exported_model_config(cfg.checkpoint_dir)
    if exported is None:
        return cfg, None
    groups = [key for key in ("model", "diffusion") if key in exported]
    shown = []
    for key in groups:
        old = OmegaConf.to_container(cfg.get(key, {}), resolve=True)
        new = OmegaConf.to_container(exported[key], resolve=True)
        changed = [f"{key}.{k}={new.get(k)}" for k in {**old, **new} if old.get(k, "-") != new.get(k, "-")]
        if changed:
            shown.append(", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else ""))
    path = Path(cfg.checkpoint_dir) / MODEL_CONFIG_FILE
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for key in groups:
            cfg[key] = exported[key]
    if not shown:
        return cfg, None
    return cfg, f"model config of {path} used instead of the composed one ({'; '.join(shown)})"
