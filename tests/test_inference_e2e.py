"""End to end on CPU: `python inference.py ...` as a user runs it, on official-layout files of fixture weights.

The weight files are written exactly as the official ones are laid out (flat LivePortrait state dicts, the nested
stitching dict with `module.` keys, wav2lip.pth {'state_dict': {module.audio_encoder.*}}, KDTalker.pth
{'model': {point_model.model.*}}, the official norm.npz). Fixture weights give no meaningful face, but every
shape, file, stage and the video container are the real ones. 0.04 s of audio -> 1 full-size frame.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from reference import ReferenceSet

from kdtalker.media import probe_video

REPO = Path(__file__).resolve().parent.parent
LIVEPORTRAIT_FILES = {
    "appearance_feature_extractor": "liveportrait/base_models/appearance_feature_extractor.pth",
    "motion_extractor": "liveportrait/base_models/motion_extractor.pth",
    "warping_module": "liveportrait/base_models/warping_module.pth",
    "spade_generator": "liveportrait/base_models/spade_generator.pth",
}


def write_fixture_checkpoints(root: Path) -> Path:
    """Write every official weight file under `root` from the reference specs' fixture weights -> root."""
    lp, audio, kd = ReferenceSet("liveportrait"), ReferenceSet("audio"), ReferenceSet("kdtalker")
    for name, relpath in LIVEPORTRAIT_FILES.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        torch.save(lp.weights(lp.manifest["specs"][name]), root / relpath)
    stitching: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in lp.weights(lp.manifest["specs"]["stitching_retargeting_module"]).items():
        entry, rest = key.split(".", 1)
        stitching.setdefault(entry, {})["module." + rest] = value  # as the released file (DDP leftovers)
    (root / "liveportrait/retargeting_models").mkdir(parents=True, exist_ok=True)
    torch.save(stitching, root / "liveportrait/retargeting_models/stitching_retargeting_module.pth")
    torch.save({"state_dict": audio.weights("spec_wav2lip_audio_encoder.json"), "global_step": 0}, root / "wav2lip.pth")
    torch.save({"model": kd.weights("spec_denoiser.json")}, root / "KDTalker.pth")
    shutil.copyfile(REPO / "checkpoints" / "norm.npz", root / "norm.npz")
    return root


def run_inference(*overrides: str, cwd: Path = REPO, progress: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
    if progress:  # the progress bars on stderr, as a user sees them
        del env["TQDM_DISABLE"]
    return subprocess.run(
        [sys.executable, str(REPO / "inference.py"), *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def short_speech(path: Path, seconds: float) -> Path:
    wav, rate = sf.read(REPO / "examples" / "speech.wav", dtype="float32")
    start = int(0.5 * rate)  # inside the utterance, not the leading silence
    sf.write(path, wav[start : start + int(seconds * rate)], rate)
    return path


@pytest.mark.slow
def test_inference_writes_the_video(fixture_checkpoints, tmp_path):
    # Names as users have them: spaces, Cyrillic, CJK, parentheses (Hydra's grammar alone cannot lex them).
    folder = tmp_path / "мои файлы 顔"
    folder.mkdir()
    image = folder / "фото (1).png"
    shutil.copyfile(REPO / "examples" / "astronaut.png", image)
    audio = short_speech(folder / "речь 顔.wav", 0.04)  # 1 frame: a full-size render costs seconds
    output = folder / "видео 1.mp4"
    result = run_inference(
        f"source_image={image}",
        f"driven_audio={audio}",
        f"output={output}",
        f"checkpoint_dir={fixture_checkpoints}",
        "steps=2",
        "device=cpu",
        "batch_size=1",
        "stitching=true",
        progress=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # The rendering bar counts the video's frames and gives the estimated total after the first batch.
    assert re.search(r"rendering: .*\| 1/1 \[.*s/frame: about \d\d:\d\d for 1 frame\b", result.stderr), result.stderr
    info = probe_video(output)
    frames = int(0.04 * 16000 / 640)
    assert info["frames"] == frames
    assert info["fps"] == 25.0
    assert (info["width"], info["height"]) == (512, 512)
    assert info["video_codec"] == "h264"
    assert info["audio_codec"] == "aac"
    assert abs(info["audio_duration"] - frames / 25) < 0.03
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(output.stat().st_mode) == 0o666 & ~umask  # as open() would create it


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_render_leaves_nothing(signum, code, fixture_checkpoints, tmp_path):
    # Stopped while rendering (the atomic temp file exists): no .part, no temp folder, one line, 128 + signal.
    audio = short_speech(tmp_path / "speech.wav", 0.4)
    output = tmp_path / "out.mp4"
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONWARNINGS="ignore", TMPDIR=str(private_tmp))
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "inference.py"),
            f"source_image={REPO / 'examples' / 'astronaut.png'}",
            f"driven_audio={audio}",
            f"output={output}",
            f"checkpoint_dir={fixture_checkpoints}",
            "steps=1",
            "device=cpu",
            "batch_size=1",
        ],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    # Rendering has begun once the output's temporary sibling and the writer's temporary folder exist.
    while not (
        any(p.name.endswith(".part") for p in tmp_path.iterdir())
        and any(p.name.startswith("kdtalker_video_") for p in private_tmp.iterdir())
    ):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert [line for line in err.splitlines() if line.strip()] == ["error: interrupted"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav", "tmp"]  # no .part, no output
    assert list(private_tmp.iterdir()) == []


def test_bad_inputs_give_one_message_and_no_output(tmp_path):
    # Every bad input is caught before the models load, so light stand-in weight files are enough here.
    from test_pipeline_checkpoints import make_fake_checkpoints

    fixture_checkpoints = make_fake_checkpoints(tmp_path / "ckpt")
    good_image = REPO / "examples" / "astronaut.png"
    good_audio = short_speech(tmp_path / "speech.wav", 0.12)
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (256, 256), (120, 130, 140)).save(blank)
    tiny_audio = tmp_path / "tiny.wav"
    sf.write(tiny_audio, np.zeros(300, np.float32), 16000)
    broken = tmp_path / "ckpt_broken"
    shutil.copytree(fixture_checkpoints, broken, ignore=shutil.ignore_patterns("KDTalker.pth"))
    out = tmp_path / "out.mp4"
    base = {
        "source_image": good_image,
        "driven_audio": good_audio,
        "output": out,
        "checkpoint_dir": fixture_checkpoints,
        "device": "cpu",
        "steps": 1,
    }
    # Through the command line: one case per kind of failure (the rest are tested in process, which is faster).
    cases = [
        ({"source_image": blank}, "no face"),
        ({"checkpoint_dir": broken}, "KDTalker.pth"),
        ({"driven_audio": tiny_audio}, "shorter than one video frame"),
        ({"source_image": None}, "source_image=PATH is required"),
    ]
    for change, message in cases:
        values = {**base, **change}
        result = run_inference(*(f"{k}={v}" for k, v in values.items() if v is not None))
        assert result.returncode == 1, (change, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        assert message in result.stderr, (message, result.stderr[-2000:])
        assert not out.exists()
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
def test_readme_python_examples_run(fixture_checkpoints, tmp_path, monkeypatch):
    # Every ```python block of the README, in order, in one namespace, from a folder laid out like the repository
    # (checkpoints/ with official-layout fixture weights, examples/ with a short cut of the speech). The demo's
    # client example (fenced ```py: it needs a running demo) is run against a live server by tests/test_demo.py.
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert len(blocks) == 5
    (tmp_path / "examples").mkdir()
    shutil.copyfile(REPO / "examples" / "astronaut.png", tmp_path / "examples" / "astronaut.png")
    short_speech(tmp_path / "examples" / "speech.wav", 0.04)  # 1 frame: each full-size render costs seconds
    (tmp_path / "checkpoints").symlink_to(fixture_checkpoints, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for index, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)  # noqa: S102 - our README
    # Run from the repository root, the examples leave nothing git would see: every file they made is ignored.
    made = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    made = [name for name in made if not name.startswith(("examples/", "checkpoints/"))]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        input="\n".join(made),
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout.split()
    assert made and sorted(ignored) == sorted(made), f"not git-ignored: {sorted(set(made) - set(ignored))}"
    assert probe_video(tmp_path / "outputs" / "out.mp4")["frames"] == 1
    assert namespace["first"].shape == (512, 512, 3) and namespace["first"].dtype == np.uint8
    assert namespace["feats"].shape == (1, 512) and namespace["windows"].shape == (1, 80, 16)
    assert namespace["frames"].shape == (1, 3, 512, 512)
    assert namespace["x_d"].shape == (1, 21, 3) and (tmp_path / "outputs" / "mine.pth").is_file()
    assert namespace["live_motion"].shape == namespace["offline"].shape == (1, 70)  # the live block: a session's motion
    np.testing.assert_allclose(namespace["live_motion"], namespace["offline"], rtol=0, atol=1e-9)


def test_rendering_bar_estimates_the_total_after_the_first_batch():
    import io

    from kdtalker.pipeline.progress import RenderingProgress

    clock = [100.0]  # tqdm's own clock, stepped by hand: the estimate must not depend on how loaded the machine is
    bar = RenderingProgress(85, file=io.StringIO(), disable=False, mininterval=0)
    bar._time, bar.start_t = (lambda: clock[0]), clock[0]
    assert bar.total == 85 and bar.estimate is None
    clock[0] += 2.0
    bar.update(4)
    assert bar.estimate == 85 * 0.5  # 2 s for the first 4 frames
    assert "0.5 s/frame: about 00:42 for 85 frames" in bar.postfix
    clock[0] += 10.0
    bar.update(4)
    assert bar.estimate == 85 * 0.5  # measured once, after the first batch
    bar.close()


def test_short_example_clip_and_the_time_per_frame_in_the_readme():
    full, rate = sf.read(REPO / "examples" / "speech.wav", dtype="int16")
    short, short_rate = sf.read(REPO / "examples" / "speech_short.wav", dtype="int16")
    assert short_rate == rate and short.ndim == 1 and 0.8 <= len(short) / rate <= 1.5
    fade = int(0.02 * rate)
    np.testing.assert_array_equal(short[:-fade], full[: len(short) - fade])  # a cut of speech.wav
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)```", readme, re.S)
    headline = next(i for i, c in enumerate(commands) if "driven_audio=examples/speech.wav output=out.mp4" in c)
    after = readme[readme.index(commands[headline]) : readme.index(commands[headline + 1])]
    # Next to the headline command: the time per frame on CPU and where the GPU figures are, then the short clip.
    assert re.search(r"CPU a 512x512 frame takes about \d+-\d+ s", after) and "GPU see *Speed*" in after, after
    assert "driven_audio=examples/speech_short.wav" in commands[headline + 1]
