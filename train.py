"""Train the KDTalker denoiser: `python train.py [experiment=...] [data=synthetic] [train.max_steps=...]`.

Resumes from the latest readable checkpoint in train.out_dir by default; multi-GPU with
`torchrun --nproc_per_node=N train.py`. Settings: kdtalker/configs/train.yaml (--help lists them).
"""

from __future__ import annotations

from kdtalker.cli import run
from kdtalker.training.config import TrainConfig


def main(cfg) -> None:
    """Train as configured and report the last checkpoint."""
    from kdtalker.training import train

    result = train(cfg)
    print(f"trained to step {result.step}; last checkpoint: {result.last_checkpoint}")


if __name__ == "__main__":
    run(main, "train", TrainConfig, usage=__doc__)
