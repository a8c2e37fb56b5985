"""scripts/evaluate.py with the e2e tests' stand-in pipeline, for the torchrun tests (tests/test_eval_distributed.py):
rendering real frames on CPU is too slow there, and the stand-in's reported timings make the FPS column exact.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/eval_standin_run.py key=value ...
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from test_eval_e2e import _StandInPipeline

from kdtalker.cli import run
from kdtalker.eval.protocol import run_evaluation


class _RankedStandIn(_StandInPipeline):
    """The stand-in, also leaving `<video>.rank`: the rank that generated the video (0 without torchrun); the rank
    named by STANDIN_STALL_RANK hangs instead (as a stuck GPU would)."""

    def generate(self, source_image, driven_audio, output, **controls):
        rank = os.environ.get("RANK", "0")
        if rank == os.environ.get("STANDIN_STALL_RANK"):
            time.sleep(600)
        Path(output).with_suffix(".rank").write_text(rank)
        return super().generate(source_image, driven_audio, output, **controls)


def main(cfg) -> None:
    """As scripts/evaluate.py's main, generating with the stand-in pipeline."""
    text = run_evaluation(cfg, _RankedStandIn)
    if text is not None:
        print(text)


if __name__ == "__main__":
    run(main, "evaluate")
