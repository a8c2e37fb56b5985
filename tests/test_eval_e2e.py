"""The evaluate script end to end on tiny clips with fixture weights.

* generate=false (another method's folder): `python scripts/evaluate.py` as a user runs it, every metric on.
* generate=true: the protocol in process with a stand-in pipeline that writes the clips (the real
  TalkingHeadPipeline is exercised by the pipeline owner's tests; rendering real frames on CPU is too slow here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf
from test_eval_csim import tiny_onnx
from test_eval_support import deep_fixture_weights

from kdtalker.config import CONFIG_DIR
from kdtalker.eval.fid import FIDInceptionV3
from kdtalker.eval.hopenet import Hopenet
from kdtalker.eval.protocol import run_evaluation
from kdtalker.media import video_size
from kdtalker.pipeline.image import load_image
from kdtalker.pipeline.video import VideoWriter

REPO = Path(__file__).resolve().parent.parent
FRAMES = 8


def _clip(path: Path, shift: int, speech: np.ndarray) -> None:
    face = cv2.resize(load_image(REPO / "examples" / "astronaut.png"), (256, 256))
    frames = np.stack([np.roll(face, shift * t, axis=1) for t in range(FRAMES)])
    with VideoWriter(path, 256, 256, 25.0, audio=speech[: FRAMES * 640], sample_rate=16000) as writer:
        writer.write(frames)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, audio_ref):
    root = tmp_path_factory.mktemp("eval")
    speech, rate = sf.read(REPO / "examples" / "speech.wav", dtype="float32", always_2d=True)
    assert rate == 16000
    speech = speech.mean(1)[8000:]
    for folder, shifts in (("gt", (0, 1)), ("peer", (1, 2))):
        (root / folder).mkdir()
        for k, s in enumerate(shifts):
            _clip(root / folder / f"clip{k}.mp4", s, speech)
    weights = root / "weights"
    weights.mkdir()
    torch.save(audio_ref.weights("spec_syncnet.json"), weights / "syncnet_v2.model")
    torch.save(deep_fixture_weights(Hopenet(), "hopenet"), weights / "hopenet.pkl")
    torch.save(deep_fixture_weights(FIDInceptionV3(), "inception"), weights / "inception.pth")
    tiny_onnx(weights / "arcface.onnx", np.random.RandomState(0).randn(3 * 112 * 112, 8).astype(np.float32) / 100)
    return root


def _overrides(root: Path, out: Path) -> list[str]:
    w = root / "weights"
    return [
        f"videos={root / 'gt'}",
        f"output_dir={out}",
        "device=cpu",
        f"weights.syncnet={w / 'syncnet_v2.model'}",
        f"weights.hopenet={w / 'hopenet.pkl'}",
        f"weights.inception={w / 'inception.pth'}",
        f"weights.arcface={w / 'arcface.onnx'}",
        "diversity.detector=hog",
        "diversity.min_confidence=-10",
        "diversity.max_frames=2",
        "fid.dims=64",
        "csim.stride=4",
    ]


@pytest.mark.slow
def test_evaluate_script_scores_another_methods_videos(setup, tmp_path):
    out = tmp_path / "out"
    table = f"tables=[{{name: peers, title: Peers, rows: [{{label: Peer, folder: '{setup / 'peer'}', fps: 30.0}}]}}]"
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "evaluate.py"), *_overrides(setup, out), "generate=false", table],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)
    assert "| Method | LSE-C↑ | LSE-D↓ | Diversity↑ | FID↓ | CPBD↑ | CSIM↑ | FPS (gen)↑ |" in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("| Peer"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert "-" not in cells[1:] and cells[-1] == "30.00"
    # these 8-frame clips have no audio beats: BA is skipped for both, and the table says so
    assert "Skipped videos: BA 2 of 2 (no audio beats)" in result.stdout
    assert (
        (out / "tables" / "peers.csv")
        .read_text()
        .startswith("Method,LSE-C,LSE-D,Diversity,FID,CPBD,CSIM,FPS (gen),Skipped\n")
    )
    assert (setup / "peer" / "clip0.metrics.json").is_file()
    # a missing weight file is one clear message, no traceback (scoring the uncached ground-truth folder)
    gt_table = f"tables=[{{name: gt, title: GT, rows: [{{label: GT, folder: '{setup / 'gt'}'}}]}}]"
    bad = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "evaluate.py"),
            *_overrides(setup, tmp_path / "o2"),
            "generate=false",
            gt_table,
            "metrics=[lse]",
            f"weights.syncnet={tmp_path / 'none.model'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert bad.returncode == 1 and "syncnet_v2.model" in bad.stderr and "Traceback" not in bad.stderr


class _StandInPipeline:
    """Writes a clip from the reference image and audio as the real pipeline's generate would (same signature), and
    reports stage times as the real pipeline's `timings` (sampling 1/64 s and rendering 3/64 s per frame)."""

    def __init__(self, overrides):
        self.overrides = overrides
        self.timings = SimpleNamespace(frames=0, sampling=0.0, rendering=0.0)
        self.calls = 0
        self.notes = [f"built with {overrides}"] if overrides else []  # as the pipeline's notes of a run

    def generate(self, source_image, driven_audio, output, **controls):
        face = cv2.resize(load_image(source_image), (256, 256))
        wav, _ = sf.read(driven_audio, dtype="float32")
        frames = len(wav) // 640
        with VideoWriter(output, 256, 256, 25.0, audio=wav, sample_rate=16000) as writer:
            writer.write(np.stack([np.roll(face, 2 * t, axis=0) for t in range(frames)]))
        self.timings.frames = frames
        self.timings.sampling, self.timings.rendering = frames / 64, 3 * frames / 64  # 16 frames/s of generation
        self.calls += 1
        return Path(output)


def test_protocol_generates_scores_caches_and_prints_tables(setup, tmp_path, capsys):
    made = []

    def factory(overrides):
        made.append(_StandInPipeline(overrides))
        return made[-1]

    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with_dotlist(
        [o for o in _overrides(setup, tmp_path / "out")] + ["seconds=0.32", "metrics=[lse,cpbd,fps,fid]"]
    )
    cfg.tables = [t for t in cfg.tables if t.name in ("table1", "table6")]
    cfg.tables[1].rows = [cfg.tables[1].rows[0], cfg.tables[1].rows[4]]  # 1 step and the full model
    text = run_evaluation(cfg, factory)
    said = capsys.readouterr().out
    assert said.count("note (1): built with ['+experiment=steps_1']") == 1 and "note (KDTalker)" not in said  # once
    print(text)
    assert [p.overrides for p in made] == [
        [],
        ["+experiment=steps_1"],
    ]  # the full model is generated once for both tables
    assert all(p.calls == 2 for p in made)
    assert "**Table 6: inference steps**" in text and "| Steps | LSE-C↑" in text
    rows = [line for line in text.splitlines() if line.startswith(("| KDTalker", "| 50", "| 1 "))]
    assert len(rows) == 3 and all(r.count("| - |") == 2 for r in rows)  # diversity and CSIM were not requested
    clip = tmp_path / "out" / "generated" / "full" / "clip0.mp4"
    cached = (tmp_path / "out" / "generated" / "full" / "clip0.metrics.json").read_text()
    assert clip.is_file() and '"lse"' in cached
    # FPS: the table's column is generation-only (16 frames/s from the stand-in's timings); wall is the stopwatch
    records = [json.loads((clip.parent / f"clip{k}.fps.json").read_text()) for k in (0, 1)]
    assert [(r["frames"], r["generation_seconds"]) for r in records] == [(8, 0.5), (8, 0.5)]
    assert all(r["wall_seconds"] > 0 for r in records)
    full = json.loads((tmp_path / "out" / "tables" / "summary.json").read_text())["table1"]["KDTalker"]
    assert full["fps"] == 16.0 and full["videos"] == 2 and "skipped" not in full
    assert full["fps_wall"] == pytest.approx(16 / sum(r["wall_seconds"] for r in records), rel=1e-12)
    assert next(r for r in rows if r.startswith("| KDTalker")).endswith("| 16.00 |")
    # second run: everything from the cache, nothing generated
    made.clear()
    assert run_evaluation(cfg, factory) == text and made == []


def test_table5_rows_run_each_renderer(setup, tmp_path, tmp_path_factory):
    """Table 5 as configured: the F.V. row through the real pipeline with renderer=facevid2vid (its checkpoint folder
    and renderer file replaced by the tiny Face-vid2vid fixture folder), the L.P. row (Table 1's) by the stand-in."""
    from test_facevid2vid_inference import RENDERER_OVERRIDES, write_facevid2vid_checkpoints

    from kdtalker.eval.protocol import build_pipeline
    from kdtalker.pipeline.weights import FACEVID2VID_WEIGHTS

    folder = write_facevid2vid_checkpoints(tmp_path_factory.mktemp("table5_facevid2vid"))
    fixture = {"checkpoint_dir": str(folder), "renderer.weights": str(folder / FACEVID2VID_WEIGHTS)}
    built = []

    def factory(overrides):
        built.append(list(overrides))
        if "renderer=facevid2vid" not in overrides:
            return _StandInPipeline(overrides)
        # the row's own overrides, with the configured folders pointed at the fixture's
        row = [f"{k}={fixture[k]}" if k in fixture else f"{k}={v}" for k, v in (o.split("=", 1) for o in overrides)]
        return build_pipeline([*row, *RENDERER_OVERRIDES[1:], "steps=2", "device=cpu"])

    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with_dotlist(_overrides(setup, tmp_path / "out") + ["seconds=0.12", "max_videos=1", "metrics=[cpbd,fps]"])
    cfg.tables = [t for t in cfg.tables if t.name == "table5"]
    text = run_evaluation(cfg, factory)
    assert built == [
        [
            "renderer=facevid2vid",
            "checkpoint_dir=checkpoints/table5_facevid2vid",
            "renderer.weights=checkpoints/facevid2vid/SadTalker_V0.0.2_256.safetensors",
        ],
        [],
    ]
    assert "**Table 5: ablation of face render**" in text
    rows = [line for line in text.splitlines() if line.startswith(("| F.V.", "| L.P. (Ours)"))]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    # LSE-C/D, diversity, FID and CSIM not requested; CPBD and FPS scored for both renderers
    assert len(rows) == 2 and all(c.count("-") == 5 and c[5] != "-" and c[7] != "-" for c in cells), rows
    clip = tmp_path / "out" / "generated" / "table5_facevid2vid" / "clip0.mp4"
    assert video_size(clip) == (256, 256)  # Face-vid2vid's own 256 px frames
    assert json.loads(clip.with_suffix(".fps.json").read_text())["frames"] == 3
