"""The checks of a live run's settings (scripts/live.py), all made before any model loads or weight downloads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from kdtalker.errors import AudioError, ConfigError, VideoError
from kdtalker.fileio import check_not_input, check_output_path
from kdtalker.pipeline.build import controls_from_config
from kdtalker.pipeline.controls import Controls
from kdtalker.pipeline.live import check_live_controls
from kdtalker.pipeline.live_run import PCM_FORMATS
from kdtalker.pipeline.motion_file import npz_path

OFFLINE_KEYS = ("driven_audio", "output", "source_video", "motion_file", "driving_video", "pose_file", "save_motion")


def check_live_run(cfg: Any, stdin_is_terminal: bool) -> Controls:
    """ConfigError (AudioError, VideoError) for live settings that do not go together; the live session's controls."""
    given = [key for key in OFFLINE_KEYS if cfg[key] is not None]
    if given:
        raise ConfigError(
            f"{given[0]} is an inference.py setting: a live run takes source_image, wav (or PCM on stdin), out "
            "and motion_out"
        )
    if not cfg.source_image:
        raise ConfigError("source_image=PATH is required: the portrait to animate")
    if cfg.stdin_format not in PCM_FORMATS:
        raise ConfigError(f"stdin_format={cfg.stdin_format!r} is not one of {tuple(PCM_FORMATS)}")
    if not cfg.chunk_ms > 0:
        raise ConfigError(f"chunk_ms must be > 0, got {cfg.chunk_ms}")
    if cfg.wav is None and stdin_is_terminal:
        raise ConfigError("give wav=PATH, or pipe 16 kHz mono PCM into stdin (stdin_format=s16le|f32le)")
    if cfg.wav is not None and not Path(cfg.wav).is_file():
        raise AudioError(f"wav={cfg.wav}: file not found")
    inputs = {"source_image": cfg.source_image, "wav": cfg.wav}
    if cfg.render:
        if cfg.out is None:
            raise ConfigError("out=PATH.mp4 is required (or render=false motion_out=PATH.npz for the motion only)")
        if Path(cfg.out).suffix.lower() != ".mp4":
            raise VideoError(f"out={cfg.out} must be an .mp4 file")
        check_output_path(cfg.out, "the video")
        check_not_input(Path(cfg.out), inputs, "out")
    elif cfg.out is not None:
        raise ConfigError("render=false writes no video: drop out=, or set render=true")
    elif cfg.motion_out is None:
        raise ConfigError("render=false needs motion_out=PATH.npz: the motion is all it makes")
    if cfg.motion_out is not None:
        check_output_path(npz_path(cfg.motion_out, "motion_out"), "the motion file")
        check_not_input(Path(cfg.motion_out), inputs, "motion_out")
    controls = controls_from_config(cfg)
    return check_live_controls(replace(controls, **OmegaConf.to_container(cfg.live, resolve=True)).validate())
