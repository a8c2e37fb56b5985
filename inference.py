"""Talking-head video from a portrait and a speech recording.

    python inference.py source_image=examples/astronaut.png driven_audio=examples/speech.wav output=out.mp4

Controls and their defaults: kdtalker/configs/inference.yaml (Hydra overrides: key=value; --help lists them).
"""

from __future__ import annotations

from pathlib import Path

from kdtalker.cli import run
from kdtalker.pipeline.config import InferenceConfig

SHIPPED_NORM = Path(__file__).resolve().parent / "checkpoints" / "norm.npz"  # not on the Hub: the repository's copy
INPUTS = ("source_image", "driven_audio", "motion_file", "driving_video", "pose_file", "source_video")


def main(cfg) -> None:
    """Build the pipeline from the config and write the video."""
    from kdtalker.pipeline import TalkingHeadPipeline
    from kdtalker.pipeline.build import controls_from_config, renderer_layout
    from kdtalker.pipeline.hub import fetch_missing
    from kdtalker.pipeline.request import Request

    # the whole run's inputs are checked before any weight is read or downloaded
    controls = controls_from_config(cfg)
    inputs = {key: cfg[key] for key in INPUTS}
    layout = renderer_layout(cfg.renderer)
    Request(controls, **inputs, output=cfg.output, save_motion=cfg.save_motion).validate().check_layout(layout)
    fetch_missing(
        cfg.checkpoint_dir,
        download=cfg.download,
        norm_copy=SHIPPED_NORM,
        crop_models=controls.crop.uses_crop_models,
        layout=layout,
        renderer_weights=cfg.renderer.get("weights"),
    )
    pipeline = TalkingHeadPipeline.from_config(cfg)
    output = pipeline.generate(output=cfg.output, save_motion=cfg.save_motion, **inputs)
    for note in pipeline.notes:
        print(f"note: {note}")
    t = pipeline.timings
    print(
        f"wrote {output}: {t.frames} frames; seconds: load {t.load:.1f}, crop {t.crop:.1f}, audio {t.audio:.1f}, "
        f"sampling {t.sampling:.1f}, rendering {t.rendering:.1f}, writing {t.writing:.1f} (busy time per stage); "
        f"wall {t.wall:.1f}"
    )


if __name__ == "__main__":
    run(main, "inference", InferenceConfig, usage=__doc__)
