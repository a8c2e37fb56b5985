"""Live talking head: speech in as it is spoken, frames out a fraction of a second later, into an mp4.

    python scripts/live.py source_image=examples/astronaut.png wav=examples/speech.wav out=live.mp4
    ffmpeg -i talk.m4a -f s16le -ac 1 -ar 16000 - | python scripts/live.py source_image=face.png out=live.mp4
    python scripts/live.py source_image=face.png wav=speech.wav render=false motion_out=motion.npz realtime=false

Settings: kdtalker/configs/live.yaml (the inference config, its `live` node, and the keys above); --help lists them.
Ctrl-C or SIGTERM (e.g. to end an endless stdin stream) stops it with `error: interrupted` and exit 130 / 143; out=
and motion_out= are written whole at the end, so a stopped run leaves neither (nor its temporary files).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from kdtalker.cli import run
from kdtalker.pipeline.config import LiveRunConfig

SHIPPED_NORM = Path(__file__).resolve().parent.parent / "checkpoints" / "norm.npz"  # not on the Hub


def main(cfg) -> None:
    """Check the inputs, build the pipeline, run one live session from the wav or stdin."""
    from kdtalker.pipeline import TalkingHeadPipeline
    from kdtalker.pipeline.hub import fetch_missing
    from kdtalker.pipeline.live_run import file_chunks, pcm_chunks, run_live
    from kdtalker.pipeline.live_setup import check_live_run

    controls = check_live_run(cfg, stdin_is_terminal=sys.stdin.isatty())
    fetch_missing(
        cfg.checkpoint_dir, download=cfg.download, norm_copy=SHIPPED_NORM, crop_models=controls.crop.uses_crop_models
    )
    pipeline = TalkingHeadPipeline.from_config(cfg)
    session = pipeline.live(cfg.source_image, render=cfg.render)
    chunk = max(1, round(cfg.chunk_ms * 16))  # 16 samples per millisecond at 16 kHz
    if cfg.wav is not None:
        chunks = file_chunks(cfg.wav, chunk, cfg.realtime)
    else:
        chunks = pcm_chunks(sys.stdin.buffer, cfg.stdin_format, chunk)
    report = run_live(session, chunks, cfg.out if cfg.render else None, cfg.motion_out, crf=cfg.crf)
    for note in pipeline.notes:
        print(f"note: {note}")
    t = pipeline.timings
    written = " and ".join(str(p) for p in (cfg.out if cfg.render else None, cfg.motion_out) if p is not None)
    delay = f"; frames came {statistics.median(report.delays):.2f} s after their audio (median)" if cfg.realtime else ""
    print(
        f"wrote {written}: {report.frames} frames from {report.audio_seconds:.2f} s of speech; seconds: audio "
        f"{t.audio:.1f}, sampling {t.sampling:.1f}, rendering {t.rendering:.1f}, writing {t.writing:.1f}{delay}"
    )


if __name__ == "__main__":
    run(main, "live", LiveRunConfig, usage=__doc__)
