"""Train a small denoiser on synthetic data (CPU, a few minutes) and print how well sampled lips follow held-out audio.

`python scripts/learning_check.py [seed=3] [train.max_steps=...]`; the last line is
`lip-audio correlation: X (shuffled audio: Y)`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from kdtalker.errors import KDTalkerError
from kdtalker.training.learning_check import learning_check

CONFIGS = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(config_path=CONFIGS, config_name="learning_check", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        check = learning_check(cfg)
    except KDTalkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"final training loss (mean of last 50 steps): {check.final_loss:.4f}")
    print(check.line())


if __name__ == "__main__":
    main()
