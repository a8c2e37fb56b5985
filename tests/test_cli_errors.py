"""Every user error through the command line: one `error: ...` line, exit 1, nothing written.

Typed config values, Hydra override mistakes, unwritable outputs, broken statistics, a huge image, model-only
or truncated checkpoints for training, and a full disk during extraction.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat
from test_pipeline_checkpoints import make_fake_checkpoints
from test_safe_loading import one_error_line, run_script
from test_train_resume import TINY

from kdtalker.config import CONFIG_DIR
from kdtalker.safeload import load_untrusted

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "examples" / "astronaut.png"
AUDIO = REPO / "examples" / "speech.wav"


@pytest.fixture(scope="module")
def fake_checkpoints(tmp_path_factory) -> Path:
    return make_fake_checkpoints(tmp_path_factory.mktemp("ckpt"))


def inference(*overrides: str, **values) -> subprocess.CompletedProcess:
    base = {"source_image": IMAGE, "driven_audio": AUDIO, "device": "cpu", "steps": 1}
    base.update(values)
    return run_script("inference.py", *(f"{k}={v}" for k, v in base.items()), *overrides)


def inference_error(capsys, **values) -> str:
    """inference.py's main through the scripts' runner (kdtalker.cli.run), in process -> its one `error:` line.

    The command line itself is run as a subprocess by test_mistyped_values_through_the_command_line; the other
    errors are the same code path without a Python start-up each.
    """
    import runpy

    from kdtalker.cli import run
    from kdtalker.pipeline.config import InferenceConfig

    main = runpy.run_path(str(REPO / "inference.py"))["main"]
    base = {"source_image": IMAGE, "driven_audio": AUDIO, "device": "cpu", "steps": 1, **values}
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run(main, "inference", InferenceConfig, argv=[f"{k}={v}" for k, v in base.items()])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert stop.value.code == 1, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


MISTYPED = [
    ("steps=abc", ["steps='abc'", "a whole number"]),
    ("steps=2.7", ["steps=2.7", "a whole number"]),
    ("seed=1.5", ["seed=1.5", "a whole number"]),
    ("stitching=no", ["stitching='no'", "true or false"]),
    ("paste_back=off", ["paste_back='off'", "true or false"]),
    ("smoothing=lots", ["smoothing='lots'", "a number"]),
    ("crop.face_index=first", ["crop.face_index='first'", "a whole number"]),
    ("foo=1", ["unknown key foo", "--help"]),
    ("source_imag=face.png", ["unknown key source_imag", "did you mean source_image"]),
    ("control.poze=video", ["unknown key control.poze", "did you mean control.pose"]),
    ("+foo=1", ["+foo=1", "nothing would read it"]),
    ("+source_imag=face.png", ["+source_imag=face.png", "nothing would read it", "source_image"]),
    ("++crop.scal=2", ["++crop.scal=2", "nothing would read it", "crop.scale"]),
    ("crop=nope", ["crop/nope", "dlib", "insightface"]),
    ("steps=1=2", ["cannot parse", "key=value"]),
    ("control.eyes_strength=half", ["control.eyes_strength='half'", "a number"]),
    ("preset=turbo", ["preset/turbo", "fast", "official"]),
    ("batch_size=many", ["batch_size='many'", "a whole number or null"]),
]


def test_mistyped_values_through_the_command_line(tmp_path, fake_checkpoints):
    for override, words in MISTYPED[::6]:
        result = inference(override, output=tmp_path / "out.mp4", checkpoint_dir=fake_checkpoints)
        assert result.returncode == 1
        line = one_error_line(result)
        assert all(w in line for w in words), line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override, words", MISTYPED)
def test_mistyped_values_are_one_line(override, words, capsys):
    # The same runner as the scripts' (kdtalker.cli.run), in process: the model is never reached.
    from kdtalker.cli import run
    from kdtalker.pipeline.config import InferenceConfig

    reached = []
    with pytest.raises(SystemExit) as stop:
        run(reached.append, "inference", InferenceConfig, argv=[override])
    assert stop.value.code == 1 and reached == []
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines


@pytest.mark.parametrize(
    "config, override, words",
    [
        ("train", "train.max_steps=abc", ["train.max_steps", "a whole number"]),
        ("train", "train.ema.enabled=no", ["train.ema.enabled", "true or false"]),
        ("extract", "overwrite=yes", ["overwrite", "true or false"]),
    ],
)
def test_training_and_extraction_values_are_typed(config, override, words, capsys):
    # train.py's and scripts/extract.py's runner and schema, in process: the work is never reached
    from kdtalker.cli import run
    from kdtalker.data.config import ExtractConfig
    from kdtalker.training.config import TrainConfig

    reached = []
    with pytest.raises(SystemExit) as stop:
        run(reached.append, config, {"train": TrainConfig, "extract": ExtractConfig}[config], argv=[override])
    assert stop.value.code == 1 and reached == []
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines


def test_unwritable_outputs_fail_before_any_work(tmp_path, fake_checkpoints, capsys):
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "file").write_text("x")
    targets = {
        tmp_path / "folder.mp4": "existing folder",
        Path("/proc/out.mp4"): "does not accept new files",
        tmp_path / "file" / "out.mp4": "not a folder",
        tmp_path / "missing" / "out.mp4": "does not exist",
    }
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    if not os.access(readonly, os.W_OK):  # root may write anywhere; /proc above refuses even root
        targets[readonly / "out.mp4"] = "Permission denied"
    for output, words in targets.items():
        line = inference_error(capsys, output=output, checkpoint_dir=fake_checkpoints)
        assert words in line and str(output) in line, line
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert list(readonly.iterdir()) == []


@pytest.mark.parametrize(
    "entry, value, words",
    [
        ("yaw_std", 0.0, "yaw_std holds zero"),
        ("exp_std", np.nan, "exp_std holds zero, negative or non-finite"),
        ("t_mean", np.inf, "t_mean holds non-finite"),
    ],
)
def test_broken_norm_statistics_are_refused(entry, value, words, tmp_path, fake_checkpoints, capsys):
    root = tmp_path / "ckpt"
    shutil.copytree(fake_checkpoints, root)
    stats = dict(np.load(root / "norm.npz"))
    stats[entry] = stats[entry].copy()
    stats[entry].flat[0] = value
    np.savez(root / "norm.npz", **stats)
    line = inference_error(capsys, output=tmp_path / "out.mp4", checkpoint_dir=root)
    assert words in line and "norm.npz" in line, line
    assert not (tmp_path / "out.mp4").exists()


def test_huge_image_names_the_pixel_limit(tmp_path, fake_checkpoints, capsys):
    from PIL import Image

    Image.new("L", (12000, 12000)).save(tmp_path / "huge.png")
    line = inference_error(
        capsys, source_image=tmp_path / "huge.png", output=tmp_path / "out.mp4", checkpoint_dir=fake_checkpoints
    )
    assert "too many pixels" in line and "12000x12000" in line and "100 MP" in line, line


def test_training_resume_falls_back_and_explains(tmp_path, capfd):
    # train.py's main through the scripts' runner, in process (its command line: test_training_and_extraction_...)
    import runpy

    from kdtalker.cli import run
    from kdtalker.training.config import TrainConfig

    main = runpy.run_path(str(REPO / "train.py"))["main"]

    def train(*overrides: str) -> tuple[int, str]:
        """-> (exit code, everything printed)"""
        argv = [*TINY, f"data.root={tmp_path / 'data'}", f"train.out_dir={tmp_path / 'run'}", "train.val_every=0"]
        capfd.readouterr()
        try:
            run(main, "train", TrainConfig, argv=[*argv, "train.ckpt_every=1", *overrides])
            code = 0
        except SystemExit as stop:
            code = stop.code
        out = capfd.readouterr()
        return code, out.out + out.err

    assert train("train.max_steps=2")[0] == 0
    latest = tmp_path / "run" / "checkpoint-000002.pth"
    latest.write_bytes(latest.read_bytes()[:5000])  # a run killed while copying, a disk that filled up, ...
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "run" / f".checkpoint-000003.pth.{dead.pid}.0badc0de.part"  # left by a SIGKILLed save
    stale.write_bytes(b"")
    code, out = train("train.max_steps=3")
    assert code == 0, out[-2000:]
    assert not stale.exists() and (tmp_path / "run" / "config.yaml").is_file()
    assert "skipped checkpoint-000002.pth" in out and "resumed from" in out and "checkpoint-000001.pth at step 1" in out

    model_only = tmp_path / "model_only.pth"
    torch.save({"model": load_untrusted(tmp_path / "run" / "checkpoint-000003.pth", "test")["model"]}, model_only)
    code, out = train(f"train.resume={model_only}", "train.max_steps=4")
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "model-only" in lines[0] and f"train.init_from={model_only}" in lines[0], lines
    code, out = train(
        f"train.init_from={model_only}", "train.resume=null", f"train.out_dir={tmp_path / 'fresh'}", "train.max_steps=1"
    )
    assert code == 0, out[-2000:]


def _limit_file_size():
    # Files over 64 KiB cannot be written: the shard write fails as on a full disk (EFBIG instead of ENOSPC).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_extraction_stops_when_the_disk_is_full(tmp_path):
    mats = tmp_path / "mats"
    mats.mkdir()
    t = 60  # ~170 KB per shard
    for name in ("a", "b", "c"):
        savemat(
            mats / f"{name}.mat",
            {
                "yaw": np.zeros((t, 1)),
                "pitch": np.zeros((t, 1)),
                "roll": np.zeros((t, 1)),
                "t": np.zeros((t, 3)),
                "exp": np.zeros((t, 21, 3)),
                "scale": np.ones((t, 1)),
                "kp": np.zeros((t, 21, 3)),
                "aud_feat": np.zeros((t + 1, 512)),
            },
        )
    env = dict(os.environ, TQDM_DISABLE="1")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "extract.py"), f"mat_dir={mats}", f"out={tmp_path / 'shards'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        preexec_fn=_limit_file_size,
        timeout=300,
    )
    assert result.returncode == 1
    line = one_error_line(result)
    assert "a.npz" in line and "extraction stopped" in line and "too large" in line, line
    assert list((tmp_path / "shards").iterdir()) == []  # no partial shard, no temporary file


def test_umask_decides_output_modes(tmp_path):
    from kdtalker.data import write_shard
    from kdtalker.data.shards import MOTION_KEYS, Clip
    from kdtalker.fileio import atomic_path

    clip = Clip({k: np.zeros((3, *s), np.float32) for k, s in MOTION_KEYS.items()}, np.zeros((4, 512), np.float32))
    old = os.umask(0o022)
    try:
        for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
            os.umask(mask)
            target = tmp_path / f"clip{mask:o}.npz"
            write_shard(target, clip)
            assert stat.S_IMODE(target.stat().st_mode) == mode
        os.umask(0o077)
        existing = tmp_path / "existing.pth"
        existing.write_bytes(b"old")
        existing.chmod(0o640)
        with atomic_path(existing) as tmp:
            torch.save({"x": 1}, tmp)
        assert stat.S_IMODE(existing.stat().st_mode) == 0o640  # an existing file keeps its mode
    finally:
        os.umask(old)


def test_stale_parts_of_dead_runs_are_removed(tmp_path):
    from kdtalker.fileio import atomic_path, temp_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.mp4.{dead.pid}.0123abcd.part"
    stale.write_bytes(b"half a video")
    mine = tmp_path / f".other.pth.{os.getpid()}.0123abcd.part"  # a live run's file is left alone
    mine.write_bytes(b"in progress")
    with atomic_path(tmp_path / "new.npz") as tmp:
        tmp.write_bytes(b"done")
    assert not stale.exists() and mine.exists() and (tmp_path / "new.npz").read_bytes() == b"done"

    import tempfile

    left = Path(tempfile.gettempdir()) / f"kdtalker_test_{dead.pid}_x"
    left.mkdir(exist_ok=True)
    with temp_dir("kdtalker_test_") as folder:
        assert folder.is_dir() and str(os.getpid()) in folder.name
    assert not left.exists() and not folder.exists()


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"control.pose": "video"}, ["give driving_video=PATH"]),
        ({"source_image": "null", "source_video": "missing.mp4"}, ["missing.mp4", "not found"]),
        ({"motion_file": "m.txt", "driven_audio": "null"}, ["motion_file=m.txt must be an .npz file"]),
        ({"signals": "both", "model": "kdtalker_multisignal"}, ["signals=both: give driving_video=PATH"]),
        ({"guidance.audio": "loud"}, ["guidance.audio='loud'", "a number"]),
        ({"cuda_graphs": "true"}, ["cuda_graphs=true needs device=cuda", "this run's device is cpu"]),
    ],
)
def test_control_keys_through_the_command_line(overrides, words, tmp_path, fake_checkpoints, capsys):
    """The control keys reach the pipeline from inference.py's config; a wrong combination is one line before any
    work (the other combinations are checked on the Python API, tests/test_pipeline_control.py)."""
    line = inference_error(capsys, output=tmp_path / "out.mp4", checkpoint_dir=fake_checkpoints, **overrides)
    assert all(w in line for w in words), line
    assert not (tmp_path / "out.mp4").exists()


def test_unicode_and_spaced_paths_reach_the_file_check(tmp_path, fake_checkpoints, capsys):
    """Values Hydra's grammar cannot lex (non-ASCII letters, parentheses) are taken as the path they are."""
    image = tmp_path / "мой портрет (顔).png"
    line = inference_error(capsys, source_image=image, output=tmp_path / "out.mp4", checkpoint_dir=fake_checkpoints)
    assert f"{image} not found" in line, line
    assert list(tmp_path.iterdir()) == []


def test_lists_interpolations_and_added_groups_still_work():
    from kdtalker.config import compose_config

    cfg = compose_config(
        "inference",
        ["+experiment=steps_5", "source_image=/tmp/a b,c.png", "output=${source_image}.mp4", "device='cpu'"],
    )
    assert cfg.steps == 5 and cfg.source_image == "/tmp/a b,c.png" and cfg.output == "/tmp/a b,c.png.mp4"
    assert compose_config("train", ["train.betas=[0.9,0.99]"]).train.betas == [0.9, 0.99]


@pytest.mark.parametrize(
    "config, override, words",
    [
        ("train", "train.max_step=5", ["unknown key train.max_step", "train.max_steps"]),
        ("train", "+train.lr_=1", ["+train.lr_=1", "nothing would read it", "train.lr"]),
        ("demo", "server.prot=1", ["unknown key server.prot", "server.port"]),
        ("compute_norm", "+shard=x", ["+shard=x", "nothing would read it", "shards"]),
        ("extract", "outt=x", ["unknown key outt", "out"]),
    ],
)
def test_every_script_names_the_closest_keys(config, override, words, capsys):
    from kdtalker.cli import run

    reached = []
    with pytest.raises(SystemExit) as stop:
        run(reached.append, config, argv=[override])
    assert stop.value.code == 1 and reached == []
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines


def _yaml_comment(config: str, key: str) -> str | None:
    """The comment of the top-level `key:` line of CONFIG.yaml (None without one), as the test reads it."""
    line = next(s for s in (CONFIG_DIR / f"{config}.yaml").read_text().splitlines() if s.startswith(f"{key}:"))
    return line.split(" #", 1)[1].strip() if " #" in line else None


@pytest.mark.parametrize(
    "config, first_keys",
    [
        ("inference", ["source_image", "source_video", "driven_audio", "output"]),
        ("train", ["seed", "device"]),
        ("demo", ["server.name"]),
        ("evaluate", ["videos"]),
        ("extract", ["videos", "mat_dir", "out"]),
        ("export_checkpoint", ["run", "step"]),
        ("compute_norm", ["shards", "out"]),
        ("download_weights", ["dir", "crop_models"]),
        ("learning_check", ["seed", "device"]),
    ],
)
def test_help_shows_the_users_keys_with_their_comments_first(config, first_keys, capsys):
    from kdtalker.cli import run

    run(lambda cfg: None, config, argv=["--help"])
    lines = capsys.readouterr().out.splitlines()
    settings = next(i for i, line in enumerate(lines) if line.startswith("Settings"))
    keys = [line.split()[0].split("=")[0] for line in lines[settings + 1 : settings + 1 + len(first_keys)]]
    assert keys == first_keys, lines
    for key, line in zip(first_keys, lines[settings + 1 :]):
        comment = None if "." in key else _yaml_comment(config, key)
        assert comment is None or line.endswith(comment), (line, comment)
    assert lines[-1] == "all keys: --cfg job"
    assert len(lines) < 120


def test_help_lists_the_groups_and_cfg_job_the_rest(capsys):
    from kdtalker.cli import run

    run(lambda cfg: None, "inference", argv=["--help", "preset=fast"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    output = next(line for line in lines if line.strip().startswith("output="))
    assert output.split()[0] == "output=null" and output.endswith(_yaml_comment("inference", "output")), output
    preset = next(line for line in lines if line.strip().startswith("preset="))
    assert preset.split()[0] == "preset=fast" and "fast, official" in preset, preset
    assert any(line.strip().startswith("+experiment=NAME") and "steps_5" in line for line in lines)
    assert any(line.split()[0] == "steps=10" for line in lines if line.strip())  # the composed value (the preset's)
    assert lines.index(preset) > max(i for i, line in enumerate(lines) if line.strip().startswith("source_image="))
    assert "warping" not in out  # renderer internals: only with --cfg job

    run(lambda cfg: None, "inference", argv=["--cfg", "job", "steps=3"])
    dump = capsys.readouterr().out
    assert "renderer:" in dump and "steps: 3" in dump


def test_help_through_the_command_line():
    result = run_script("inference.py", "--help")
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("source_image="))
    assert first < 15 and lines[-1] == "all keys: --cfg job", result.stdout


def test_missing_weights_are_all_listed_with_their_source(tmp_path):
    from kdtalker.pipeline.weights import NORM_FILE, WEIGHT_FILES

    empty = tmp_path / "ckpt"
    empty.mkdir()
    result = inference(output=tmp_path / "out.mp4", checkpoint_dir=empty, download="never")  # the folder check
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and "missing" in lines[0] and str(empty) in lines[0], lines
    items = lines[1:]
    assert all(line.startswith("  ") for line in items), lines
    assert len(items) == len(WEIGHT_FILES) + 1
    for spec, line in zip(WEIGHT_FILES, items):
        assert str(empty / spec.relpath) in line and spec.source in line, line
    assert str(empty / NORM_FILE) in items[-1]
    assert list(empty.iterdir()) == [] and not (tmp_path / "out.mp4").exists()
