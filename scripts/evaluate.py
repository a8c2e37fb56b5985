"""The paper's HDTF evaluation: generate (or take) videos, score LSE-C/D, diversity, FID, CPBD, CSIM, FPS, beat-align.

    python scripts/evaluate.py videos=HDTF/ output_dir=eval_outputs
    python scripts/evaluate.py videos=HDTF/ generate=false \
        'tables=[{name: peers, title: Peers, rows: [{label: SadTalker, folder: sadtalker/}]}]'

Settings: kdtalker/configs/evaluate.yaml. Tables are printed and saved under output_dir/tables (markdown + csv).
"""

from __future__ import annotations

from kdtalker.cli import run


def main(cfg) -> None:
    """Run the protocol and print the tables."""
    from kdtalker.eval.protocol import run_evaluation

    print(run_evaluation(cfg))


if __name__ == "__main__":
    run(main, "evaluate", usage=__doc__)
