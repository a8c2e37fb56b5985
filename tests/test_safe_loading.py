"""Weight files are untrusted: a hostile pickle never runs, foreign classes load as inert data, our own files load.

Every kind of weight file is tried with a payload that would create a marker file: through `inference.py` (its
pre-flight check reads each file), through the loader of that kind (zip and legacy torch formats, and a plain
pickle), through train.py (init_from, resume) and through the evaluation loaders.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pipeline_checkpoints import FAKE_CONTENTS, make_fake_checkpoints
from test_train_resume import TINY

from kdtalker.diffusion import load_kdtalker
from kdtalker.diffusion.checkpoint import official_keys
from kdtalker.errors import CheckpointError
from kdtalker.eval.weights import load_hopenet, load_inception, load_syncnet
from kdtalker.pipeline.weights import WEIGHT_FILES, check_checkpoint_dir, check_weight_file
from kdtalker.safeload import ForeignObject, load_untrusted, pickle_globals
from kdtalker.weights import load_torch_file

REPO = Path(__file__).resolve().parent.parent


class SystemPayload:
    """Unpickling calls os.system(command)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class ExecPayload:
    """Unpickling calls builtins.exec(code)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


class PopenPayload:
    """Unpickling starts a process."""

    def __init__(self, argv: list[str]):
        self.argv = argv

    def __reduce__(self):
        return subprocess.Popen, (self.argv,)


def hostile(contents, payload, path: Path, fmt: str = "zip") -> Path:
    """The official contents of a file with a payload among its entries, saved as `fmt` (zip | legacy | pickle)."""
    obj = dict(contents) if isinstance(contents, dict) else {"state": contents}
    obj["__payload__"] = payload
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "pickle":
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def payloads(marker: Path) -> list:
    return [
        SystemPayload(f"touch {marker}"),
        ExecPayload(f"open({str(marker)!r}, 'w').close()"),
        PopenPayload(["touch", str(marker)]),
    ]


def run_script(script: str, *overrides: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, str(REPO / script), *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("spec", WEIGHT_FILES, ids=lambda s: Path(s.relpath).stem)
def test_hostile_weight_file_is_refused_by_inference(spec, tmp_path):
    root = make_fake_checkpoints(tmp_path / "ckpt")
    marker = tmp_path / "PWNED"
    hostile(FAKE_CONTENTS[spec.relpath], SystemPayload(f"touch {marker}"), root / spec.relpath)
    result = run_script(
        "inference.py",
        f"source_image={REPO / 'examples' / 'astronaut.png'}",
        f"driven_audio={REPO / 'examples' / 'speech.wav'}",
        f"output={tmp_path / 'out.mp4'}",
        f"checkpoint_dir={root}",
        "device=cpu",
    )
    assert result.returncode == 1
    line = one_error_line(result)
    assert "refused" in line and Path(spec.relpath).name in line and "system" in line
    assert not marker.exists() and not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle"])
def test_no_payload_runs_in_any_format(fmt, tmp_path):
    marker = tmp_path / "PWNED"
    for index, payload in enumerate(payloads(marker)):
        for spec in WEIGHT_FILES:
            root = tmp_path / f"{fmt}{index}"
            path = hostile(FAKE_CONTENTS[spec.relpath], payload, root / spec.relpath, fmt)
            with pytest.raises(CheckpointError, match="refused"):
                load_torch_file(path, spec.what)  # what every loader calls
            with pytest.raises(CheckpointError, match="refused"):
                check_weight_file(root, spec)  # the pre-flight check
    assert not marker.exists()


def test_hostile_evaluation_weights_and_training_files(tmp_path):
    marker = tmp_path / "PWNED"
    evil = hostile({"fc.weight": torch.zeros(1)}, SystemPayload(f"touch {marker}"), tmp_path / "evil.pth")
    for loader in (load_syncnet, load_hopenet, load_inception, load_kdtalker):
        with pytest.raises(CheckpointError, match="refused"):
            loader(evil)
    for option in ("train.init_from", "train.resume"):
        result = run_script(
            "train.py",
            *TINY,
            f"data.root={tmp_path / 'data'}",
            f"train.out_dir={tmp_path / 'run'}",
            f"{option}={evil}",
            "train.max_steps=1",
        )
        assert result.returncode == 1
        assert "refused" in one_error_line(result)
    assert not marker.exists()


def test_unknown_classes_load_as_inert_data(tmp_path):
    # Importable but not allowed (datetime.date) and not importable at all: both become ForeignObject records.
    import datetime

    path = tmp_path / "odd.pth"
    torch.save({"model": {"w": torch.ones(2)}, "when": datetime.date(2024, 5, 17)}, path)
    assert "datetime.date" in pickle_globals(path)
    obj = load_untrusted(path, "test file")
    assert torch.equal(obj["model"]["w"], torch.ones(2))
    assert isinstance(obj["when"], ForeignObject) and obj["when"].global_name == "datetime.date"
    assert isinstance(obj["when"].args[0], bytes)  # the pickled arguments, as data


OFFICIAL_TRAINER = textwrap.dedent("""
    import sys, torch
    from dataclasses import dataclass, field
    from enum import Enum
    from omegaconf import OmegaConf
    sys.path.insert(0, sys.argv[1])
    from config.structured import ProjectConfig
    cfg = OmegaConf.structured(ProjectConfig)
    state = torch.load(sys.argv[2], weights_only=True)
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "scheduler": {"last_epoch": 3},
                "epoch": 0, "step": 3, "best_val": None, "model_ema": {}, "cfg": cfg}, sys.argv[3])
""")
STRUCTURED = textwrap.dedent("""
    from dataclasses import dataclass, field
    from enum import Enum
    class Precision(Enum):
        FP32 = "fp32"
    @dataclass
    class RunConfig:
        seed: int = 42
        precision: Precision = Precision.FP32
    @dataclass
    class ProjectConfig:
        run: RunConfig = field(default_factory=RunConfig)
        lr: float = 2e-6
        name: str = "kdtalker"
""")


def test_official_trainer_checkpoint_with_foreign_cfg_loads(tmp_path, kdtalker_ref):
    # Written by another process whose `config.structured` module does not exist here.
    module = tmp_path / "official_repo" / "config"
    module.mkdir(parents=True)
    (module / "__init__.py").write_text("")
    (module / "structured.py").write_text(STRUCTURED)
    state = tmp_path / "state.pth"
    torch.save(kdtalker_ref.weights("spec_denoiser.json"), state)
    official = tmp_path / "KDTalker.pth"
    subprocess.run([sys.executable, "-c", OFFICIAL_TRAINER, str(module.parent), str(state), str(official)], check=True)
    assert "config.structured.ProjectConfig" in pickle_globals(official)

    model = load_kdtalker(official)  # the `model` entry loads strictly
    state = official_keys(model.state_dict())
    for key, value in kdtalker_ref.weights("spec_denoiser.json").items():
        assert torch.equal(state[key.removeprefix("point_model.model.")], value), key
    ckpt = load_torch_file(official, "KDTalker diffusion model")
    assert isinstance(ckpt["cfg"], ForeignObject) and ckpt["step"] == 3
    assert "config" not in sys.modules and "config.structured" not in sys.modules  # nothing was imported

    root = make_fake_checkpoints(tmp_path / "ckpt")
    (root / "KDTalker.pth").write_bytes(official.read_bytes())
    assert check_checkpoint_dir(root)["KDTalker.pth"] == root / "KDTalker.pth"


def test_own_training_state_round_trips(tmp_path):
    import random

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "arrays": [np.arange(4, dtype=np.float32), np.float64(2.5), np.int64(7)],
        "set": {1, 2},
    }
    torch.save({"rng": [state]}, tmp_path / "own.pth")
    back = load_untrusted(tmp_path / "own.pth", "training checkpoint")["rng"][0]
    assert back["python"] == state["python"]
    assert all(np.array_equal(a, b) for a, b in zip(back["numpy"], state["numpy"]) if isinstance(a, np.ndarray))
    assert back["numpy"][2:] == state["numpy"][2:]
    assert torch.equal(back["torch"], state["torch"])
    np.testing.assert_array_equal(back["arrays"][0], state["arrays"][0])
    assert back["arrays"][1:] == state["arrays"][1:] and back["set"] == {1, 2}
