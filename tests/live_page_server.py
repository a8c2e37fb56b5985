"""The demo page (kdtalker/demo/app.py) on the fast doubles of test_pipeline_generate.py, for the Live tab's browser
test (tests/test_demo_live.py): the fixture weights render a frame in seconds on a CPU, too slow for a microphone.

    python tests/live_page_server.py CHECKPOINT_DIR PORT   (the page at http://127.0.0.1:PORT/ until SIGINT)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from test_pipeline_generate import RandomSpeechFeatures, RecordingRenderer

from kdtalker.cli import install_signal_handlers
from kdtalker.config import compose_config
from kdtalker.demo.cache import gradio_cache
from kdtalker.demo.config import DemoConfig
from kdtalker.diffusion import DDIMScheduler, Denoiser
from kdtalker.diffusion.motion import MotionNorm
from kdtalker.pipeline import TalkingHeadPipeline
from kdtalker.pipeline.models import Models


def doubles_models(checkpoint_dir: Path) -> Models:
    """The doubles of test_pipeline_generate.py's `pipeline` fixture (the norm statistics of `checkpoint_dir`)."""
    torch.manual_seed(0)
    return Models(
        renderer=RecordingRenderer(),
        audio=RandomSpeechFeatures(),
        denoiser=Denoiser(width=64, depth=1, heads=2, head_dim=32, time_dim=32).eval(),
        scheduler=DDIMScheduler(),
        norm=MotionNorm.load(checkpoint_dir / "norm.npz"),
    )


def main(checkpoint_dir: Path, port: int) -> None:
    """Serve the page with the doubles pipeline until interrupted."""
    cfg = compose_config(
        "demo",
        [f"checkpoint_dir={checkpoint_dir}", "device=cpu", "steps=2", "batch_size=4", f"server.port={port}"],
        DemoConfig,
    )
    pipe = TalkingHeadPipeline.from_config(cfg)
    pipe.models = doubles_models(checkpoint_dir)
    install_signal_handlers()  # as scripts/demo.py (kdtalker.cli.run): under pytest-xdist SIGINT arrives ignored
    with gradio_cache():
        from kdtalker.demo.app import Demo, build_app, serve

        demo = Demo(cfg, pipe, None)
        try:
            serve(build_app(demo), cfg)
        except KeyboardInterrupt:
            pass
        finally:
            demo.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
