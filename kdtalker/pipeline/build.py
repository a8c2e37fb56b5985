"""The inference config (packaged YAML, overrides) and the pipeline's constructor arguments built from it.

A `checkpoint_dir/model.yaml` (scripts/export_checkpoint.py) replaces the model group (and the diffusion group when
it has that node): an exported run is rebuilt with its own architecture.
"""

from __future__ import annotations

import copy
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import yaml
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from kdtalker.config import compose_config, config_error, typed_config
from kdtalker.diffusion import Guidance
from kdtalker.errors import ConfigError, KDTalkerError
from kdtalker.motion_layout import MotionLayout, layout_of_target
from kdtalker.pipeline.config import InferenceConfig
from kdtalker.pipeline.control import Control
from kdtalker.pipeline.controls import Controls
from kdtalker.pipeline.keyframes import keyframes_of
from kdtalker.pipeline.silence import Silence
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

MODEL_CONFIG_FILE = "model.yaml"  # an exported run's model config (scripts/export_checkpoint.py) in checkpoint_dir


def inference_config(*overrides: str, **settings: Any) -> DictConfig:
    """The packaged inference config (kdtalker/configs/inference.yaml) with Hydra overrides ("preset=fast",
    "crop=insightface") and settings by name (steps=10, control={"pose": "still"}), typed; ConfigError otherwise."""
    cfg = compose_config("inference", overrides, InferenceConfig)
    if not settings:
        return cfg
    try:
        cfg = OmegaConf.merge(cfg, {k: str(v) if isinstance(v, os.PathLike) else v for k, v in settings.items()})
    except OmegaConfBaseException as exc:
        raise config_error(exc, InferenceConfig) from None
    return typed_config(cfg, InferenceConfig)


def controls_from_config(cfg: Any) -> Controls:
    """The inference config's per-run settings as Controls (the crop group built by its _target_)."""
    nested = ("control", "guidance", "crop", "keyframes", "silence")
    values = {f.name: cfg[f.name] for f in fields(Controls) if f.name not in nested}
    keyframes = cfg.keyframes
    return Controls(
        **values,
        keyframes=keyframes_of(OmegaConf.to_container(keyframes) if OmegaConf.is_config(keyframes) else keyframes),
        crop=_built(cfg.crop, "crop"),
        control=Control.of(OmegaConf.to_container(cfg.control, resolve=True)),
        guidance=Guidance(**OmegaConf.to_container(cfg.guidance, resolve=True)),
        silence=Silence(**OmegaConf.to_container(cfg.silence, resolve=True)),
    ).validate()


def default_controls(**settings: Any) -> Controls:
    """The inference config's controls (the official behaviour) with some settings changed by name."""
    return controls_from_config(inference_config(**settings))


def pipeline_arguments(cfg: Any) -> tuple[dict[str, Any], str | None]:
    """Inference config -> TalkingHeadPipeline's keyword arguments, and a note when model.yaml changed the config.

    renderer and audio: their `_target_` with all their keys (built when the models load, on the pipeline's
    device); model: its `_target_` class loaded from KDTalker.pth with the other keys; diffusion: the sampler;
    layout: the renderer's motion layout, whose size the model's motion_dim must be.
    """
    cfg = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(cfg)
    cfg, note = _with_exported_model(cfg)
    model_kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    model_class = _built(model_kwargs.pop("_target_"), "model", get_class)
    layout = renderer_layout(cfg.renderer)
    check_motion_dim(model_kwargs.get("motion_dim"), layout, cfg.checkpoint_dir)
    arguments = dict(
        checkpoint_dir=cfg.checkpoint_dir,
        device=cfg.device,
        dtype=cfg.dtype,
        controls=controls_from_config(cfg),
        kalman_transition_cov=cfg.kalman.transition_cov,
        kalman_observation_cov=cfg.kalman.observation_cov,
        scheduler=_built(cfg.diffusion, "diffusion"),
        model_class=model_class,
        model_kwargs=model_kwargs,
        renderer_factory=_built(cfg.renderer, "renderer", partial=True),
        layout=layout,
        audio_factory=_built(cfg.audio, "audio", partial=True),
        overlap=cfg.overlap,
        cuda_graphs=cfg.cuda_graphs,
        live_controls=OmegaConf.to_container(cfg.live, resolve=True),
    )
    return arguments, note


def renderer_layout(node: Any) -> MotionLayout:
    """The motion layout of the renderer group's class (its `layout`; LivePortrait's for a renderer without one)."""
    try:
        layout = layout_of_target(str(node.get("_target_")))
    except Exception:  # noqa: BLE001 - a wrong target is reported by _built, with the group's name
        return LIVEPORTRAIT_LAYOUT
    return layout or LIVEPORTRAIT_LAYOUT


def check_motion_dim(motion_dim: Any, layout: MotionLayout, checkpoint_dir: Any) -> None:
    """ConfigError unless the model's motion_dim is the renderer layout's size (the denoiser predicts its motion)."""
    if motion_dim == layout.dim:
        return
    raise ConfigError(
        f"model.motion_dim={motion_dim} does not fit renderer={layout.name}, whose motion is {layout.dim}-d: use the "
        f"checkpoint_dir of a model trained for this renderer (its {MODEL_CONFIG_FILE} says motion_dim: {layout.dim}; "
        f"{checkpoint_dir} has none that does) or the other renderer"
    )


def _built(node: Any, group: str, build: Callable[..., Any] = instantiate, partial: bool = False) -> Any:
    """A config group's object from its `_target_` (a partial when it is built later, on the device); one
    ConfigError naming the group when the target or its keys are wrong."""
    try:
        return build(node, _partial_=True) if partial else build(node)
    except Exception as exc:  # noqa: BLE001 - instantiate wraps constructor errors in its own types
        if isinstance(exc.__cause__, KDTalkerError):  # the object's own check says what is wrong
            raise exc.__cause__ from None
        detail = next((s for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
        raise ConfigError(f"the {group} config could not be built: {detail}") from None


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
    if isinstance(node.get("diffusion"), DictConfig) and "num_inference_steps" in node.diffusion:
        with open_dict(node):  # exports before `steps` became the one step count carried the sampler's own
            del node.diffusion["num_inference_steps"]
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
