"""Train a small denoiser on synthetic data (CPU, minutes) and print how well its samples follow held-out signals.

`python scripts/learning_check.py [seed=3] [train.max_steps=...]`; the last line is
`lip-audio correlation: X (shuffled audio: Y)`.
`python scripts/learning_check.py check=multisignal seed=N`: the multi-signal model; the last four lines are
`multisignal both|audio|motion|shuffled: lips~audio X, pose~motion Y`.
`python scripts/learning_check.py generator=vae|gan|vae_gan seed=N`: paper Table 4's one-pass generators on the
same network; the same last line as the diffusion check.
"""

from __future__ import annotations

from kdtalker.cli import run
from kdtalker.training.config import LearningCheckConfig


def main(cfg) -> None:
    """Train, sample held-out clips, print the correlations."""
    from kdtalker.training.learning_check import learning_check

    check = learning_check(cfg)
    print(f"final training loss (mean of last 50 steps): {check.final_loss:.4f}")
    for line in check.lines():
        print(line)


if __name__ == "__main__":
    run(main, "learning_check", LearningCheckConfig, usage=__doc__)
