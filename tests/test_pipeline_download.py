"""scripts/download_weights.py without internet: skips present files, copies the shipped norm.npz, names what failed."""

from __future__ import annotations

import importlib.util
import sys
import urllib.error
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("download_weights", REPO / "scripts" / "download_weights.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would (its dataclass looks itself up there)
    spec.loader.exec_module(module)
    return module


def test_offline_download_fails_cleanly(tmp_path, monkeypatch, capsys):
    script = _script()
    calls = []

    def offline(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(script.urllib.request, "urlopen", offline)
    present = tmp_path / "liveportrait" / "base_models" / "appearance_feature_extractor.pth"
    present.parent.mkdir(parents=True)
    present.write_bytes(b"already here")
    with pytest.raises(SystemExit) as stop:
        script.cli([f"dir={tmp_path}", "timeout=1"])
    assert stop.value.code == 1
    err = capsys.readouterr()
    assert "present" in err.out and "appearance_feature_extractor.pth" in err.out
    assert "could not download" in err.err and "motion_extractor.pth" in err.err and "checkpoints/README.md" in err.err
    assert calls == [
        "https://huggingface.co/KwaiVGI/LivePortrait/resolve/main/liveportrait/base_models/motion_extractor.pth"
    ]
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
    script = _script()
    monkeypatch.setattr(script, "sources", lambda crop_models=False: {"norm.npz": "https://example.invalid/norm.npz"})
    monkeypatch.setattr(
        script.urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(AssertionError("no network"))
    )
    script.cli([f"dir={tmp_path}"])
    assert (tmp_path / "norm.npz").read_bytes() == (REPO / "checkpoints" / "norm.npz").read_bytes()
