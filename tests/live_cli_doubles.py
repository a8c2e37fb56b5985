"""scripts/live.py as a program on the doubles of test_pipeline_generate.py (the models `load` gives), for the
signal tests of tests/test_pipeline_live.py: the real weights take many seconds to load and render on a CPU.

    python tests/live_cli_doubles.py key=value ...   (scripts/live.py's keys; checkpoint_dir= holds norm.npz)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from live_page_server import doubles_models

from kdtalker.cli import run
from kdtalker.pipeline import TalkingHeadPipeline
from kdtalker.pipeline.config import LiveRunConfig

REPO = Path(__file__).resolve().parent.parent


def _load(self: TalkingHeadPipeline):
    if self.models is None:
        self.models = doubles_models(self.checkpoint_dir)
    return self.models


if __name__ == "__main__":
    spec = importlib.util.spec_from_file_location("live_script", REPO / "scripts" / "live.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    TalkingHeadPipeline.load = _load
    run(script.main, "live", LiveRunConfig, argv=sys.argv[1:])
