"""The paper's HDTF evaluation: generate (or take) videos, score LSE-C/D, diversity, FID, CPBD, CSIM, FPS, beat-align.

    python scripts/evaluate.py videos=HDTF/ output_dir=eval_outputs
    python scripts/evaluate.py videos=HDTF/ generate=false 'tables=[{name: peers, title: Peers, rows: [{label: SadTalker, folder: sadtalker/}]}]'

Settings: configs/evaluate.yaml. Tables are printed and saved under output_dir/tables (markdown + csv).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdtalker.errors import KDTalkerError  # noqa: E402
from kdtalker.eval.protocol import run_evaluation  # noqa: E402


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        print(run_evaluation(cfg))
    except KDTalkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
