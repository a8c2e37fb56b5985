"""scripts/download_weights.py without internet: skips present files, copies the shipped norm.npz, names what failed.

Downloads from a (fake) Hub: tests/test_pipeline_hub.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("download_weights", REPO / "scripts" / "download_weights.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would (its dataclass looks itself up there)
    spec.loader.exec_module(module)
    return module


def test_offline_download_fails_cleanly(tmp_path, capsys):
    script = _script()  # HF_HUB_OFFLINE=1 (conftest): huggingface_hub looks only in its (empty) cache
    present = tmp_path / "liveportrait" / "base_models" / "appearance_feature_extractor.pth"
    present.parent.mkdir(parents=True)
    present.write_bytes(b"already here")
    with pytest.raises(SystemExit) as stop:
        script.cli([f"dir={tmp_path}", "timeout=1"])
    assert stop.value.code == 1
    err = capsys.readouterr()
    assert "present" in err.out and "appearance_feature_extractor.pth" in err.out
    lines = err.err.strip().splitlines()
    assert lines[0].startswith("error: 6 weight files are missing") and "checkpoints/README.md" in lines[0], lines
    assert len(lines) == 7 and "motion_extractor.pth <- https://" in lines[1] and "HF_HUB_OFFLINE" in lines[0]
    assert present.read_bytes() == b"already here"
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p != present]
    assert leftovers == []  # nothing half-written


def test_every_official_file_has_a_source():
    script = _script()
    urls = script.sources(crop_models=True)
    assert urls["KDTalker.pth"].endswith("ChaolongYang/KDTalker/resolve/main/ckpts/KDTalker.pth")
    assert urls["wav2lip.pth"].endswith("ckpts/wav2lip.pth")
    assert "insightface/models/buffalo_l/det_10g.onnx" in urls
    assert len(urls) == 10


def test_shipped_norm_is_copied_offline(tmp_path, monkeypatch):
    import huggingface_hub

    script = _script()
    for relpath in script.sources():  # every Hub file present: only the statistics are missing
        if relpath != "norm.npz":
            (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / relpath).write_bytes(b"present")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("the Hub was asked"))
    monkeypatch.setattr(script.urllib.request, "urlopen", lambda *a, **k: pytest.fail("GitHub was asked"))
    script.cli([f"dir={tmp_path}"])
    assert (tmp_path / "norm.npz").read_bytes() == (REPO / "checkpoints" / "norm.npz").read_bytes()
