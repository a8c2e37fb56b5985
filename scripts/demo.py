"""The web demo: a Gradio page (and API endpoint `generate`) around the inference pipeline.

    python scripts/demo.py [checkpoint_dir=checkpoints] [server.port=7860] [server.share=false] [device=cuda ...]

Then open http://127.0.0.1:7860 (tab Live: the microphone streamed into a live session).
Settings: kdtalker/configs/demo.yaml (the inference config + server and input limits).
"""

from __future__ import annotations

from pathlib import Path

from kdtalker.cli import run
from kdtalker.demo.cache import gradio_cache
from kdtalker.demo.config import DemoConfig
from kdtalker.errors import CheckpointError
from kdtalker.pipeline.build import controls_from_config
from kdtalker.pipeline.hub import fetch_missing

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_NORM = ROOT / "checkpoints" / "norm.npz"  # not on the Hub: the repository's copy
EXAMPLES = [[str(ROOT / "examples" / "astronaut.png"), str(ROOT / "examples" / "speech.wav")]]


def main(cfg) -> None:
    """Fetch missing weights, load the models, build the page, serve it until interrupted; what the server kept goes
    with it."""
    try:
        fetch_missing(
            cfg.checkpoint_dir,
            download=cfg.download,
            norm_copy=SHIPPED_NORM,
            crop_models=controls_from_config(cfg).crop.uses_crop_models,
        )
    except CheckpointError as exc:  # the page still starts: it lists the missing files and keeps Generate off
        print(f"note: {' '.join(str(exc).split())}", flush=True)
    with gradio_cache():  # before Gradio is imported: it takes its folder from the environment then
        from kdtalker.demo.app import Demo, build_app, serve

        demo = Demo.from_config(cfg)
        try:
            if demo.problem is not None:
                print(f"note: {' '.join(demo.problem.replace('**', '').split())}", flush=True)
            serve(build_app(demo, EXAMPLES), cfg, allowed_paths=[str(ROOT / "examples")])
        finally:
            demo.close()


if __name__ == "__main__":
    run(main, "demo", DemoConfig, usage=__doc__)
