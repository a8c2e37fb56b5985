"""scripts/export_checkpoint.py: a trained ablation run -> a checkpoint folder inference reads with its own model.

A tiny `experiment=ablation_no_rope` run (2 steps, EMA on) is exported against an official-layout base folder; the
folder's files are checked against the run (weights bit for bit, norm stats, model config, links), the pipeline's
model.yaml handling is checked, then `inference.py checkpoint_dir=OUT` renders a video from it end to end.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from test_inference_e2e import run_inference, short_speech
from test_pipeline_checkpoints import make_fake_checkpoints
from test_train_resume import tiny_cfg

from kdtalker.config import CONFIG_DIR, compose_config
from kdtalker.data.prepare import prepare_data
from kdtalker.diffusion import DDIMScheduler, DDPMScheduler, Denoiser
from kdtalker.diffusion.checkpoint import kdtalker_state_dict
from kdtalker.errors import ConfigError
from kdtalker.media import probe_video
from kdtalker.pipeline import TalkingHeadPipeline, build
from kdtalker.pipeline.config import InferenceConfig
from kdtalker.pipeline.weights import CROP_FILES, NORM_FILE, WEIGHT_FILES, check_checkpoint_dir
from kdtalker.training import export as export_module
from kdtalker.training import train
from kdtalker.training.checkpoint import load_checkpoint
from kdtalker.weights import load_torch_file

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "export_checkpoint.py"
BASE_FILES = sorted(spec.relpath for spec in WEIGHT_FILES if spec.relpath != "KDTalker.pth")
# the tiny run's model: what an inference config must say to match its model.yaml
TINY_MODEL = [
    "model=kdtalker_no_rope",
    "model.width=32",
    "model.depth=1",
    "model.heads=2",
    "model.head_dim=16",
    "model.window=16",
]


def _script():
    spec = importlib.util.spec_from_file_location("export_checkpoint_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXPORT = _script()


def export(capsys, *overrides: str) -> tuple[int, str, str]:
    """scripts/export_checkpoint.py with these overrides, in this process -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        EXPORT.run(EXPORT.main, "export_checkpoint", EXPORT.ExportConfig, argv=list(overrides))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def error_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


def inference_cfg(*overrides: str):
    return compose_config("inference", ["device=cpu", *overrides], InferenceConfig)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 2-step `experiment=ablation_no_rope` run with EMA: checkpoint-00000{1,2}.pth and config.yaml."""
    root = tmp_path_factory.mktemp("training")
    overrides = ("experiment=ablation_no_rope", "train.max_steps=2", "train.ckpt_every=1", "train.val_every=0")
    fewer = ("data.synthetic.num_train=3", "data.synthetic.num_val=0", "train.ema.every=1")
    train(tiny_cfg(root, "run", *overrides, *fewer))
    return root / "run"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """An official-layout folder (small stand-in files) with the optional crop models and its own KDTalker/norm."""
    root = make_fake_checkpoints(tmp_path_factory.mktemp("base"))
    for relpath in CROP_FILES.values():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(b"onnx stand-in")
    return root


def test_export_writes_a_complete_folder(run_dir, base, tmp_path, capsys):
    out = tmp_path / "ckpt"
    code, stdout, err = export(capsys, f"run={run_dir}", f"base={base}", f"out={out}")
    assert code == 0, err
    assert f"wrote {out}" in stdout and "checkpoint-000002.pth (step 2)" in stdout  # the newest by default

    linked = BASE_FILES + sorted(CROP_FILES.values())
    files = {str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir()}
    assert files == {"KDTalker.pth", NORM_FILE, "model.yaml", *linked}
    for relpath in linked:
        assert (out / relpath).is_symlink() and os.path.samefile(out / relpath, base / relpath), relpath
        assert not os.path.isabs(os.readlink(out / relpath))
    for relpath in ("KDTalker.pth", NORM_FILE, "model.yaml"):  # the run's own, never base's
        assert not (out / relpath).is_symlink()

    # KDTalker.pth: the official layout with the run's model weights, bit for bit, and nothing of the training
    run_ckpt = load_checkpoint(run_dir / "checkpoint-000002.pth")
    exported = load_torch_file(out / "KDTalker.pth", "exported model")
    assert set(exported) == {"model", "model_ema"} and exported["model_ema"] == {}
    assert list(exported["model"]) == list(run_ckpt["model"])
    for key, value in run_ckpt["model"].items():
        assert value.dtype == exported["model"][key].dtype and torch.equal(value, exported["model"][key]), key

    # model.yaml: the run's model config (the ablation's architecture), no sampler for a diffusion run
    run_cfg = OmegaConf.load(run_dir / "config.yaml")
    node = OmegaConf.load(out / "model.yaml")
    assert OmegaConf.to_container(node) == {"model": OmegaConf.to_container(run_cfg.model)}
    assert node.model.attention == "plain" and node.model.width == 32 and node.model.window == 16
    kwargs = {k: v for k, v in OmegaConf.to_container(node.model).items() if k != "_target_"}
    model = get_class(node.model._target_).from_pretrained(out / "KDTalker.pth", **kwargs)  # strict
    trained = kdtalker_state_dict(run_ckpt)
    assert list(model.state_dict()) == list(trained)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.values()))

    # norm.npz: the statistics the run normalised with
    with np.load(prepare_data(run_cfg.data, build=False).norm) as want, np.load(out / NORM_FILE) as got:
        assert sorted(want.files) == sorted(got.files)
        assert all(np.array_equal(want[k], got[k]) for k in want.files)
    with np.load(base / NORM_FILE) as official, np.load(out / NORM_FILE) as got:
        assert not all(np.array_equal(official[k], got[k]) for k in official.files)

    assert set(check_checkpoint_dir(out)) == {*BASE_FILES, "KDTalker.pth", NORM_FILE}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no staging folder left beside it


def test_step_ema_and_copies(run_dir, base, tmp_path, capsys):
    ckpts = {step: load_checkpoint(run_dir / f"checkpoint-{step:06d}.pth") for step in (1, 2)}

    def exported(out: Path) -> dict[str, torch.Tensor]:
        return load_torch_file(out / "KDTalker.pth", "exported model")["model"]

    code, stdout, err = export(capsys, f"run={run_dir}", f"base={base}", f"out={tmp_path / 'one'}", "step=1")
    assert code == 0 and "checkpoint-000001.pth (step 1)" in stdout, err
    model = exported(tmp_path / "one")
    assert all(torch.equal(model[k], v) for k, v in ckpts[1]["model"].items())
    assert not all(torch.equal(model[k], v) for k, v in ckpts[2]["model"].items())

    code, stdout, err = export(
        capsys, f"run={run_dir}", f"base={base}", f"out={tmp_path / 'ema'}", "ema=true", "link=false"
    )
    assert code == 0 and "EMA weights of" in stdout, err
    model = exported(tmp_path / "ema")
    assert list(model) == list(ckpts[2]["model_ema"])
    assert all(torch.equal(model[k], v) for k, v in ckpts[2]["model_ema"].items())
    assert not all(torch.equal(model[k], v) for k, v in ckpts[2]["model"].items())  # the EMA, not the trained weights
    for relpath in BASE_FILES:  # link=false: real copies
        copy = tmp_path / "ema" / relpath
        assert not copy.is_symlink() and copy.read_bytes() == (base / relpath).read_bytes()


def test_pipeline_builds_the_exported_model(run_dir, base, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert export(capsys, f"run={run_dir}", f"base={base}", f"out={out}")[0] == 0
    node = OmegaConf.to_container(OmegaConf.load(out / "model.yaml").model)

    pipe = TalkingHeadPipeline.from_config(inference_cfg(f"checkpoint_dir={out}"))  # the default model group
    assert pipe.model_class is Denoiser and pipe.model_kwargs == {k: v for k, v in node.items() if k != "_target_"}
    assert isinstance(pipe.scheduler, DDIMScheduler)  # a diffusion run keeps the composed sampler
    denoiser = pipe.model_class.from_pretrained(out / "KDTalker.pth", "cpu", **pipe.model_kwargs)
    assert denoiser.window == 16
    pipe._begin_run()  # the note reaches the first run (inference.py prints it), once
    assert len(pipe.notes) == 1
    assert f"{out / 'model.yaml'}" in pipe.notes[0] and "model.attention=plain" in pipe.notes[0]
    pipe._begin_run()
    assert pipe.notes == []

    # a config that already says what model.yaml says: nothing to note
    same = TalkingHeadPipeline.from_config(inference_cfg(f"checkpoint_dir={out}", *TINY_MODEL))
    same._begin_run()
    assert same.notes == [] and same.model_kwargs == pipe.model_kwargs

    # the official folder has no model.yaml: the composed model group, unchanged
    official = TalkingHeadPipeline.from_config(inference_cfg(f"checkpoint_dir={base}"))
    official._begin_run()
    assert (
        official.notes == [] and official.model_kwargs["attention"] == "rope" and official.model_kwargs["width"] == 768
    )


def test_a_one_pass_generator_run_carries_its_sampler(run_dir, base, tmp_path, capsys):
    run = tmp_path / "vae_run"
    run.mkdir()
    os.symlink(run_dir / "checkpoint-000002.pth", run / "checkpoint-000002.pth")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.generator = {"kind": "vae"}
    cfg.diffusion = {  # as a run trained before `steps` was the one step count saved it: with the sampler's own
        **OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "diffusion" / "ddpm.yaml")),
        "num_inference_steps": 7,
    }
    OmegaConf.save(cfg, run / "config.yaml")
    out = tmp_path / "vae"
    assert export(capsys, f"run={run}", f"base={base}", f"out={out}")[0] == 0
    node = OmegaConf.load(out / "model.yaml")
    assert OmegaConf.to_container(node.diffusion) == OmegaConf.to_container(cfg.diffusion)
    pipe = TalkingHeadPipeline.from_config(inference_cfg(f"checkpoint_dir={out}"))  # composes diffusion=ddim
    assert isinstance(pipe.scheduler, DDPMScheduler) and pipe.controls.steps == 50  # steps is the one step count
    pipe._begin_run()
    assert "diffusion._target_=kdtalker.diffusion.DDPMScheduler" in pipe.notes[0]

    cfg.generator = {"kind": "diffusion"}
    OmegaConf.save(cfg, run / "config.yaml")
    assert export(capsys, f"run={run}", f"base={base}", f"out={out}", "overwrite=true")[0] == 0
    assert set(OmegaConf.load(out / "model.yaml")) == {"model"}


@pytest.mark.parametrize(
    "text",
    ["- a\n- b\n", "model: {width: 3}\n", "model: [unclosed\n", "model: {_target_: x}\ndiffusion: 3\n"],
    ids=["list", "no_target", "bad_yaml", "bad_diffusion"],
)
def test_a_broken_model_yaml_is_a_config_error(text, base, tmp_path):
    folder = make_fake_checkpoints(tmp_path / "ckpt")
    (folder / "model.yaml").write_text(text)
    with pytest.raises(ConfigError, match=str(folder / "model.yaml")):
        TalkingHeadPipeline.from_config(inference_cfg(f"checkpoint_dir={folder}"))


def test_user_errors_are_one_line(run_dir, base, tmp_path, capsys):
    def refused(*overrides: str) -> str:
        code, _, err = export(capsys, *overrides)
        return error_line(code, err)

    out = f"out={tmp_path / 'out'}"
    args = (f"base={base}", out)
    assert "out=DIR is required" in refused(f"run={run_dir}", f"base={base}")
    assert "does not exist" in refused(f"run={tmp_path / 'nowhere'}", *args)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert f"no checkpoint-XXXXXX.pth in run folder {empty}" in refused(f"run={empty}", *args)
    assert "available steps: 1, 2" in refused(f"run={run_dir}", *args, "step=5")
    assert "step=" in refused(f"run={run_dir}", *args, "step=five")

    no_config = tmp_path / "no_config"
    no_config.mkdir()
    os.symlink(run_dir / "checkpoint-000002.pth", no_config / "checkpoint-000002.pth")
    assert f"{no_config / 'config.yaml'} not found" in refused(f"run={no_config}", *args)

    no_ema = tmp_path / "no_ema"
    no_ema.mkdir()
    shutil.copyfile(run_dir / "config.yaml", no_ema / "config.yaml")
    torch.save(
        {**load_checkpoint(run_dir / "checkpoint-000002.pth"), "model_ema": {}}, no_ema / "checkpoint-000002.pth"
    )
    assert "no EMA weights" in refused(f"run={no_ema}", *args, "ema=true")

    wrong_model = tmp_path / "wrong_model"  # a config.yaml that does not describe the checkpoint's network
    wrong_model.mkdir()
    os.symlink(run_dir / "checkpoint-000002.pth", wrong_model / "checkpoint-000002.pth")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.model.width = 64
    OmegaConf.save(cfg, wrong_model / "config.yaml")
    assert "do not fit the model config" in refused(f"run={wrong_model}", *args)

    partial = make_fake_checkpoints(tmp_path / "partial")
    (partial / "wav2lip.pth").unlink()
    assert f"missing weight file {partial / 'wav2lip.pth'}" in refused(f"run={run_dir}", f"base={partial}", out)
    assert "does not exist" in refused(f"run={run_dir}", f"base={tmp_path / 'no_base'}", out)

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "something").write_text("kept")
    assert "overwrite=true" in refused(f"run={run_dir}", f"base={base}", f"out={taken}")
    assert (taken / "something").read_text() == "kept"
    assert "holds base" in refused(f"run={run_dir}", f"base={base}", f"out={base}", "overwrite=true")
    assert sorted(p.name for p in base.iterdir()) == [
        "KDTalker.pth",
        "insightface",
        "liveportrait",
        NORM_FILE,
        "wav2lip.pth",
    ]
    assert not (tmp_path / "out").exists()


def test_overwrite_and_a_failed_export_leave_no_half_folder(run_dir, base, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "old.txt").write_text("old")
    stale = tmp_path / ".ckpt.999999999.0badc0de.part"  # left by a killed export (no such process)
    stale.mkdir()
    (stale / "KDTalker.pth").write_bytes(b"half")
    assert export(capsys, f"run={run_dir}", f"base={base}", f"out={out}", "overwrite=true")[0] == 0
    assert not (out / "old.txt").exists() and (out / "model.yaml").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # the stale staging folder went too

    def disk_full(source, target, *args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(export_module, "_place", disk_full)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    code, _, err = export(capsys, f"run={run_dir}", f"base={base}", f"out={out}", "overwrite=true")
    assert "the disk is full" in error_line(code, err)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # the previous export is untouched
    fresh = tmp_path / "new" / "deeper" / "ckpt"
    code, _, err = export(capsys, f"run={run_dir}", f"base={base}", f"out={fresh}")
    assert "the disk is full" in error_line(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no half folder, no folders made for it


def test_the_names_match_the_pipeline():
    assert export_module.MODEL_CONFIG_FILE == build.MODEL_CONFIG_FILE
    assert export_module.NORM_FILE == NORM_FILE
    assert export_module.MODEL_FILE in {spec.relpath for spec in WEIGHT_FILES}


@pytest.mark.slow
def test_an_exported_generator_runs_inference_end_to_end(fixture_checkpoints, tmp_path, capsys):
    # A 2-step `experiment=table4_vae` run (paper Table 4): its folder rebuilds the tiny network from model.yaml
    # and samples it with the run's one-pass sampler; the official weights around it are full-size fixtures.
    train(tiny_cfg(tmp_path, "vae", "experiment=table4_vae", "train.max_steps=2", "train.val_every=0"))
    out = tmp_path / "checkpoints" / "table4_vae"
    code, _, err = export(capsys, f"run={tmp_path / 'vae'}", f"base={fixture_checkpoints}", f"out={out}")
    assert code == 0, err
    assert load_torch_file(out / "KDTalker.pth", "model")["generator_kind"] == "vae"
    audio = short_speech(tmp_path / "speech.wav", 0.04)  # one video frame
    video = tmp_path / "out.mp4"
    args = (
        f"source_image={REPO / 'examples' / 'astronaut.png'}",
        f"driven_audio={audio}",
        f"output={video}",
        "device=cpu",
        "batch_size=1",
    )
    result = run_inference(*args, f"checkpoint_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and f"{out / 'model.yaml'}" in notes[0] and "OneStepSampler" in notes[0], notes
    info = probe_video(video)
    assert info["frames"] == 1 and (info["width"], info["height"]) == (512, 512)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    # the official diffusion weights are refused by the one-pass sampler, before anything is rendered
    wrong = run_inference(*args, f"checkpoint_dir={fixture_checkpoints}", "generator=vae")
    lines = [line for line in wrong.stderr.splitlines() if line.strip()]
    assert wrong.returncode == 1 and lines[-1].startswith("error: ") and "is a diffusion model" in lines[-1], lines
