"""Train the KDTalker denoiser: `python train.py [experiment=...] [data=synthetic] [train.max_steps=...]`.

Resumes from the latest checkpoint in train.out_dir by default; multi-GPU with `torchrun --nproc_per_node=N train.py`.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from kdtalker.errors import KDTalkerError
from kdtalker.training import train


@hydra.main(config_path="configs", config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        result = train(cfg)
    except KDTalkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"trained to step {result.step}; last checkpoint: {result.last_checkpoint}")


if __name__ == "__main__":
    main()
