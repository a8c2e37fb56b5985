"""The paper's HDTF evaluation: generate (or take) videos, score LSE-C/D, diversity, FID, CPBD, CSIM, FPS, beat-align.

    python scripts/evaluate.py videos=HDTF/ output_dir=eval_outputs
    python scripts/evaluate.py videos=HDTF/ generate=false \
        'tables=[{name: peers, title: Peers, rows: [{label: SadTalker, folder: sadtalker/}]}]'
    torchrun --standalone --nproc_per_node=8 scripts/evaluate.py videos=HDTF/ output_dir=eval_outputs   # 8 GPUs

Settings: kdtalker/configs/evaluate.yaml. Tables are printed and saved under output_dir/tables (markdown + csv).
"""

from __future__ import annotations

from kdtalker.cli import run


def main(cfg) -> None:
    """Run the protocol and print the tables (under torchrun: rank 0 prints them)."""
    from kdtalker.eval.protocol import run_evaluation

    text = run_evaluation(cfg)
    if text is not None:
        print(text)


if __name__ == "__main__":
    run(main, "evaluate", usage=__doc__)
