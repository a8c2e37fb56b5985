"""train(): a few steps on synthetic data; a killed run resumes exactly; train.py writes loadable checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from kdtalker.config import CONFIG_DIR
from kdtalker.training import train
from kdtalker.training.checkpoint import latest_checkpoint, load_checkpoint
from kdtalker.training.optim import cosine_with_warmup, param_groups

ROOT = Path(__file__).resolve().parent.parent

TINY = [
    "data=synthetic",
    "device=cpu",
    "torch_threads=1",
    "seed=5",
    "model.width=32",
    "model.depth=1",
    "model.heads=2",
    "model.head_dim=16",
    "model.window=16",
    "data.window=16",
    "data.synthetic.num_train=6",
    "data.synthetic.num_val=2",
    "data.synthetic.min_frames=30",
    "data.synthetic.max_frames=40",
    "data.samples_per_clip=2",
    "train.batch_size=4",
    "train.num_workers=0",
    "train.precision=fp32",
    "train.lr=1e-3",
    "train.warmup_steps=2",
    "train.schedule_steps=20",
    "train.log_every=2",
    "train.val_every=3",
    "train.val_sample_clips=2",
    "train.val_sample_frames=20",
    "train.val_sample_steps=4",
    "train.ema.enabled=true",
    "train.ema.every=2",
]


def tiny_cfg(tmp_path: Path, run: str, *overrides: str):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose(
            "train", overrides=[*TINY, f"data.root={tmp_path / 'data'}", f"train.out_dir={tmp_path / run}", *overrides]
        )


def test_killed_run_resumes_exactly(tmp_path):
    # 12 windows / batch 4 = 3 steps per epoch: the runs cross epochs and the resume lands mid-epoch.
    full = train(tiny_cfg(tmp_path, "full", "train.max_steps=7", "train.ckpt_every=100"))
    assert full.step == 7 and len(full.losses) == 7
    assert {"val/loss", "val/lip_corr", "val/lip_corr_shuffled"} <= set(full.metrics)

    first = train(tiny_cfg(tmp_path, "killed", "train.max_steps=6", "train.ckpt_every=2"))
    # "kill" it after step 5: the checkpoints of steps 5 and 6 were never written
    for step in (5, 6):
        (tmp_path / "killed" / f"checkpoint-{step:06d}.pth").unlink(missing_ok=True)
    assert latest_checkpoint(tmp_path / "killed").name == "checkpoint-000004.pth"
    resumed = train(tiny_cfg(tmp_path, "killed", "train.max_steps=7", "train.ckpt_every=2"))

    assert first.losses == full.losses[:6]
    assert resumed.losses == full.losses[4:]  # steps 5..7 repeat bit for bit
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    ckpt_full, ckpt_resumed = load_checkpoint(full.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert ckpt_full["ema_num_updates"] == ckpt_resumed["ema_num_updates"] == 3
    for key, value in ckpt_full["model_ema"].items():
        assert torch.equal(value, ckpt_resumed["model_ema"][key]), key
    assert ckpt_full["scheduler"] == ckpt_resumed["scheduler"]
    # The saved random state is the one the run continues from (no DataLoader draw from the global RNG).
    for saved_full, saved_resumed in zip(ckpt_full["rng"], ckpt_resumed["rng"]):
        assert torch.equal(saved_full["torch"], saved_resumed["torch"])
        assert torch.equal(saved_full["generator"], saved_resumed["generator"])
        assert saved_full["python"] == saved_resumed["python"]
        assert (saved_full["numpy"][1] == saved_resumed["numpy"][1]).all()
    assert ckpt_full["step"] == ckpt_resumed["step"] == 7 and ckpt_resumed["epoch"] == 2
    assert (tmp_path / "killed" / "tb").is_dir()


def test_checkpoint_layout_loads_for_inference(tmp_path):
    from kdtalker.diffusion import load_kdtalker

    result = train(tiny_cfg(tmp_path, "run", "train.max_steps=2", "train.ckpt_every=1", "train.val_every=0"))
    ckpt = load_checkpoint(result.last_checkpoint)
    assert {"model", "optimizer", "scheduler", "epoch", "step", "best_val", "model_ema", "cfg"} <= set(ckpt)
    assert all(k.startswith("point_model.model.") for k in ckpt["model"])
    kwargs = {k: v for k, v in ckpt["cfg"]["model"].items() if k != "_target_"}
    fresh = load_kdtalker(result.last_checkpoint, **kwargs)  # what inference does with a trained file
    for a, b in zip(fresh.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)
    ema = load_kdtalker(ckpt, ema=True, **kwargs)
    assert not all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), fresh.state_dict().values()))
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*.pth")) == [
        "checkpoint-000001.pth",
        "checkpoint-000002.pth",
    ]


def test_official_optimiser_recipe():
    model = torch.nn.Module()
    model.proj = torch.nn.Linear(3, 3)
    model.time_rel_pos_bias = torch.nn.Embedding(4, 2)  # name contains "bias": no decay, as in the official split
    model.norm = torch.nn.Module()
    model.norm.gamma = torch.nn.Parameter(torch.ones(3))  # custom LayerNorm gamma: decayed, as in the official split
    model.frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    decay, plain = param_groups(model, 1e-6)
    assert decay["weight_decay"] == 1e-6 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.proj.weight), id(model.norm.gamma)}
    assert {id(p) for p in plain["params"]} == {id(model.proj.bias), id(model.time_rel_pos_bias.weight)}
    f = cosine_with_warmup(2000, 500_000)
    assert f(0) == 0.0 and f(1000) == 0.5 and f(2000) == 1.0
    assert f(2000 + 249_000) == pytest.approx(0.5) and f(500_000) == pytest.approx(0.0)


def test_train_script_trains_then_resumes(tmp_path):
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        *TINY,
        f"data.root={tmp_path / 'data'}",
        f"train.out_dir={tmp_path / 'cli'}",
        "train.val_every=0",
        "train.ckpt_every=1",
    ]
    first = subprocess.run(args + ["train.max_steps=1"], capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run(args + ["train.max_steps=2"], capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stdout + again.stderr and "at step 1" in again.stdout + again.stderr
    assert load_checkpoint(tmp_path / "cli" / "checkpoint-000002.pth")["step"] == 2
    bad = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "device=cpu",
            f"data.train_dir={tmp_path / 'none'}",
            f"train.out_dir={tmp_path / 'bad'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "extract.py" in bad.stderr


def test_a_non_finite_loss_stops_before_anything_is_saved(tmp_path, monkeypatch):
    """The loss is checked when the step's values reach the host (a log line, a validation, a checkpoint), not
    with a sync per step; a NaN at step 3 stops the run naming step 3, and no checkpoint of it is written."""
    from kdtalker.errors import KDTalkerError
    from kdtalker.training import trainer

    plain, calls = trainer._loss, []

    def broken(*args, **kwargs):
        out = plain(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(trainer, "_loss", broken)
    cfg = tiny_cfg(tmp_path, "run", "train.max_steps=6", "train.ckpt_every=3", "train.log_every=5", "train.val_every=0")
    with pytest.raises(KDTalkerError, match="training loss became nan at step 3"):
        train(cfg)
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*.pth")) == []
