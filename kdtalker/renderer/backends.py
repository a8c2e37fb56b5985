"""Where warping + decoder run: PyTorch (eager or inductor) or the exported graph in onnxruntime / OpenVINO.

`renderer.backend`:
- auto: openvino for a float32 CPU renderer with a graph cache (or a given graph) when OpenVINO is installed and
  compile=false, torch otherwise (resolved again when the renderer moves to another device or dtype);
- torch: the modules, eager;
- inductor: the modules through torch.compile (the same as compile=true);
- onnxruntime / openvino: the ONNX graph of export.py, exported from the loaded weights on the first render (one
  trace, seconds to a minute at full size; kept in the graph cache, graph_cache.py, so the next process loads it)
  and run on the CPU in float32. OpenVINO is told to keep float32: on a
  CPU with AMX or AVX512-BF16 its default would compute in bfloat16.

Source-only work (the extractors, the source compression) stays in PyTorch: it runs once per clip.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from kdtalker.errors import CheckpointError, ConfigError
from kdtalker.fileio import temp_dir
from kdtalker.renderer.export import WARP_DECODE_INPUTS, export_warp_decode
from kdtalker.renderer.graph_cache import GRAPH_NAME, cached_graph, graph_key

BACKENDS = ("auto", "torch", "inductor", "onnxruntime", "openvino")
GRAPH_BACKENDS = ("onnxruntime", "openvino")
_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype, cached: bool) -> str:
    """auto -> openvino for a float32 CPU renderer whose graph is cached or given (`cached`) when OpenVINO is
    installed (README "Renderer backends": x1.7-2.1 the torch backend there), else torch; other names unchanged."""
    if backend != "auto":
        return backend
    fits = device.type == "cpu" and dtype == torch.float32 and cached
    return "openvino" if fits and importlib.util.find_spec(_PACKAGES["openvino"]) is not None else "torch"


def check_graph_backend(backend: str, device: torch.device, dtype: torch.dtype) -> None:
    """A graph backend runs float32 on the CPU and needs its package: otherwise one ConfigError saying so."""
    if device.type != "cpu":
        raise ConfigError(f"renderer.backend={backend} runs on the CPU; use device=cpu or renderer.backend=torch")
    if dtype != torch.float32:
        raise ConfigError(f"renderer.backend={backend} runs in float32; use dtype=float32 or renderer.backend=torch")
    _import(backend)


def _import(backend: str):
    """The backend's runtime package, or a ConfigError naming the package to install."""
    try:
        return importlib.import_module(_PACKAGES[backend])
    except ImportError:
        raise ConfigError(
            f"renderer.backend={backend} needs the {_PACKAGES[backend]} package: pip install {_PACKAGES[backend]} "
            "(or pip install -e .[cpu] for every CPU backend)"
        ) from None


class GraphWarpDecode:
    """The exported warp+decode graph in a runtime: (f_s, compressed, x_s, x_d) tensors -> frames (B, 3, 512, 512)."""

    def __init__(self, backend: str, path: str | Path, threads: int):
        self.backend = backend
        runtime = _import(backend)
        if backend == "onnxruntime":
            options = runtime.SessionOptions()
            options.intra_op_num_threads = threads
            options.log_severity_level = 3  # warnings about unused initialisers of the traced graph are noise
            self._session = runtime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self._run = lambda feeds: self._session.run(None, feeds)[0]
        else:
            config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
            compiled = runtime.Core().compile_model(str(path), "CPU", config)
            self._request = compiled.create_infer_request()
            self._run = lambda feeds: self._request.infer(feeds)[0].copy()

    @classmethod
    def build(
        cls,
        renderer: torch.nn.Module,
        backend: str,
        opset: int,
        cache: str | os.PathLike | None,
        settings: Mapping[str, object],
        f_s: torch.Tensor,
        compressed: torch.Tensor,
        x_s: torch.Tensor,
        x_d: torch.Tensor,
    ) -> "GraphWarpDecode":
        """The renderer's warping + decoder (dynamic batch, traced on these inputs) loaded in `backend`: from the
        graph cache folder `cache` (None: no cache), exported on a miss; `settings` are the renderer's graph-affecting
        settings, part of the cache key."""
        _import(backend)
        renderer.prepare()
        example = (f_s.float().contiguous(), compressed.float().contiguous(), x_s.float(), x_d.float())

        def export(path: Path) -> None:
            export_warp_decode(renderer.warping, renderer.decoder, example, path, opset, dynamic_batch=True)

        threads = torch.get_num_threads()
        if cache is not None:
            key = graph_key((renderer.warping, renderer.decoder), example[:3] + (x_d[:1],), opset, settings)
            path = cached_graph(cache, key, export)
            if path is not None:
                return cls(backend, path, threads)
        with temp_dir("kdtalker_graph_") as folder:
            export(folder / GRAPH_NAME)
            return cls(backend, folder / GRAPH_NAME, threads)

    @classmethod
    def load(cls, backend: str, path: str | Path) -> "GraphWarpDecode":
        """An exported warp_decode.onnx (scripts/export_renderer.py) in `backend`; CheckpointError if unreadable."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"renderer.graph={path} is not a file: give the warp_decode.onnx written by scripts/export_renderer.py "
                "(or renderer.graph=null to export on the first render)"
            )
        _import(backend)
        try:
            return cls(backend, path, torch.get_num_threads())
        except Exception as exc:  # noqa: BLE001 - the runtimes raise their own untyped errors for unreadable files
            raise CheckpointError(f"renderer.graph={path} cannot be loaded by {backend}: {exc}") from None

    def __call__(
        self, f_s: torch.Tensor, compressed: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor
    ) -> torch.Tensor:
        """f_s (1, 32, 16, 64, 64), compressed (1, 4, 16, 64, 64), x_s (1, 21, 3), x_d (B, 21, 3) -> (B, 3, H, W)."""
        arrays = (f_s, compressed, x_s, x_d)
        # the runtimes read an array's buffer as C-ordered: channels-last tensors are copied to that order
        feeds = {
            name: np.ascontiguousarray(a.detach().float().cpu().numpy()) for name, a in zip(WARP_DECODE_INPUTS, arrays)
        }
        return torch.from_numpy(self._run(feeds))
