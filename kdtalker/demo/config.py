"""Types of kdtalker/configs/demo.yaml: the inference config plus the server and the input limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from kdtalker.pipeline.config import InferenceConfig


@dataclass
class ServerConfig:
    """The `server` node: where Gradio listens."""

    name: str = MISSING
    port: int = MISSING
    share: bool = MISSING


@dataclass
class LimitsConfig:
    """The `limits` node: what a request may send."""

    audio_seconds: float = MISSING
    upload_mb: int = MISSING
    queue_size: int = MISSING
    live_stream_every: float = MISSING
    live_seconds: int = MISSING
    live_finish_seconds: float = MISSING


@dataclass
class DemoConfig(InferenceConfig):
    """kdtalker/configs/demo.yaml: kdtalker/configs/inference.yaml + server + limits."""

    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
