"""Talking-head video from a portrait and a speech recording.

    python inference.py source_image=examples/astronaut.png driven_audio=examples/speech.wav output=out.mp4

Controls and their defaults: configs/inference.yaml (Hydra overrides: key=value).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from kdtalker.errors import ConfigError, KDTalkerError
from kdtalker.pipeline import TalkingHeadPipeline


@hydra.main(version_base="1.3", config_path="configs", config_name="inference")
def main(cfg: DictConfig) -> None:
    try:
        for key in ("source_image", "driven_audio", "output"):
            if not cfg.get(key):
                raise ConfigError(f"{key}=PATH is required, e.g. python inference.py source_image=face.png driven_audio=speech.wav output=out.mp4")
        pipeline = TalkingHeadPipeline.from_config(cfg)
        output = pipeline.generate(cfg.source_image, cfg.driven_audio, cfg.output)
    except KDTalkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    t = pipeline.timings
    print(f"wrote {output}: {t.frames} frames; seconds: load {t.load:.1f}, crop {t.crop:.1f}, audio {t.audio:.1f}, "
          f"sampling {t.sampling:.1f}, rendering {t.rendering:.1f}, writing {t.writing:.1f}")


if __name__ == "__main__":
    main()
