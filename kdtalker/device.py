"""Device and dtype resolution from config strings; the only place that looks for CUDA."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from kdtalker.errors import ConfigError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available else CPU; a name or a torch.device is checked: ConfigError when CUDA (or the
    numbered GPU) is asked for and absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = name if isinstance(name, torch.device) else torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device={name!r} is not a device name (use auto, cpu, cuda or cuda:N)") from exc
    shown = str(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={shown!r} was asked for but CUDA is not available here; use device=cpu or device=auto"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device={shown!r}: this machine has {torch.cuda.device_count()} GPU(s) (cuda:0 .. "
            f"cuda:{torch.cuda.device_count() - 1}); use one of those or device=auto"
        )
    return device


def resolve_dtype(name: str | torch.dtype = "float32") -> torch.dtype:
    """'float32' | 'float16' | 'bfloat16' | 'float64' -> torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise ConfigError(f"dtype={name!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def cpu_has_bfloat16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX): oneDNN's bf16 kernels are fast there."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cpu_name() -> str:
    """What this CPU offers, in words: e.g. 'AVX2', 'AVX512', 'AVX512 + AVX512-BF16', 'AVX512 + AMX'."""
    base = torch.backends.cpu.get_cpu_capability()
    extras = [
        name
        for name, ok in (
            ("AVX512-BF16", torch.cpu._is_avx512_bf16_supported()),
            ("AMX", torch.cpu._is_amx_tile_supported()),
        )
        if ok
    ]
    return " + ".join([base, *extras])


def check_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """ConfigError for a precision this device cannot run fast; returns dtype.

    CPU: float32 always; bfloat16 where the CPU has AVX512-BF16 or AMX (elsewhere oneDNN emulates it, many times
    slower than float32); float16 never. CUDA: float32, float16, bfloat16 (bfloat16 from compute capability 8.0).
    """
    if device.type == "cpu":
        if dtype == torch.bfloat16 and not cpu_has_bfloat16():
            raise ConfigError(
                f"dtype=bfloat16 on CPU needs AVX512-BF16 or AMX, and this CPU has {cpu_name()} (bfloat16 would be "
                "emulated, many times slower than float32); use dtype=float32"
            )
        if dtype not in (torch.float32, torch.bfloat16):
            raise ConfigError(f"dtype={str(dtype).removeprefix('torch.')} is for GPUs; on CPU use dtype=float32")
    elif device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"dtype=bfloat16 is not supported by {torch.cuda.get_device_name(device)}; use float16")
    return dtype


def fastest_dtype(device: torch.device) -> torch.dtype:
    """The fastest precision the renderer runs well on `device`: float16 on CUDA, bfloat16 on a CPU that has it."""
    if device.type == "cuda":
        return torch.float16  # the official LivePortrait renders in half precision on GPUs
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bfloat16() else torch.float32


@contextmanager
def cudnn_autotuned(device: torch.device) -> Iterator[None]:
    """cuDNN picks each convolution's fastest algorithm (measured once per shape) inside this block on a CUDA
    device; the process-wide flag is put back after, so code around a render keeps its own setting."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
