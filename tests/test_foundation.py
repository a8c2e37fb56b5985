import pytest
import torch

from kdtalker.device import resolve_device, resolve_dtype
from kdtalker.errors import ConfigError, KDTalkerError
from kdtalker.fileio import atomic_path


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(KDTalkerError, match="does not exist"):
        with atomic_path(tmp_path / "nope" / "out.mp4"):
            pass


def test_device_and_dtype_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_dtype("float16") is torch.float16
    with pytest.raises(ConfigError):
        resolve_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_dtype_checks_per_device(monkeypatch):
    """bfloat16 on CPU only where it is native (one clear error elsewhere); float16 never on CPU."""
    import kdtalker.device as device_module
    from kdtalker.device import check_dtype, fastest_dtype
    from kdtalker.errors import ConfigError

    cpu = torch.device("cpu")
    assert check_dtype(cpu, torch.float32) is torch.float32
    with pytest.raises(ConfigError, match="float16 is for GPUs"):
        check_dtype(cpu, torch.float16)
    monkeypatch.setattr(device_module, "cpu_has_bfloat16", lambda: False)
    with pytest.raises(ConfigError, match="needs AVX512-BF16 or AMX, and this CPU has"):
        check_dtype(cpu, torch.bfloat16)
    assert fastest_dtype(cpu) is torch.float32
    monkeypatch.setattr(device_module, "cpu_has_bfloat16", lambda: True)
    assert check_dtype(cpu, torch.bfloat16) is torch.bfloat16 and fastest_dtype(cpu) is torch.bfloat16
