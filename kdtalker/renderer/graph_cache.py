"""A cache of exported warp+decode graphs, so a graph backend exports once per machine, not once per process.

An entry is a folder `<cache>/<key>/` holding `warp_decode.onnx`, its sha256 (`warp_decode.onnx.sha256`) and
`key.json` (what the key was made of, for people). The key is the sha256 of everything the graph depends on:

- the content of the warping and decoder weights (their state dicts: name, dtype, shape and bytes of each tensor);
- the traced input shapes (the batch axis is dynamic), the ONNX opset and the float dtype;
- the renderer settings that change what is traced (fold_batchnorm, fuse_ops, grid_sample);
- the versions of torch and onnx, which write the graph.

onnxruntime and OpenVINO read the same ONNX file, so the two backends share an entry.

An entry is built in a private `.<key>.<pid>.<random>.part` folder beside it and renamed into place in one step:
two processes exporting the same key each build their own folder, the first rename wins and the other process
uses the winner's entry. A reader checks the graph's sha256; a damaged or truncated entry is moved aside, one
warning line says so, and the graph is exported again. A cache folder that cannot be written (read-only, full)
costs a warning line and an export into a temporary folder (as with no cache), never the run.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.metadata
import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from kdtalker.fileio import PART_SUFFIX, describe_os_error, remove_stale_parts

GRAPH_NAME = "warp_decode.onnx"
_CHUNK = 1 << 24  # bytes hashed per update when checking a graph file


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def weights_digest(modules: Iterable[torch.nn.Module]) -> str:
    """sha256 of the modules' state dicts (each tensor's name, dtype, shape and float32 C-ordered bytes)."""
    digest = hashlib.sha256()
    for i, module in enumerate(modules):
        for name, tensor in module.state_dict().items():
            array = tensor.detach().cpu().contiguous().numpy()
            digest.update(f"{i}.{name}:{array.dtype}:{tuple(array.shape)};".encode())
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def graph_key(
    modules: Iterable[torch.nn.Module],
    inputs: Iterable[torch.Tensor],
    opset: int,
    settings: Mapping[str, object],
) -> dict:
    """What an exported warp+decode graph depends on, as a JSON-able dict (inputs: the trace's example tensors)."""
    return {
        "graph": GRAPH_NAME,
        "weights_sha256": weights_digest(modules),
        # axis 0 of the driving keypoints is dynamic: the other shapes are fixed in the graph
        "input_shapes": [list(t.shape) for t in inputs],
        "dynamic_batch": True,
        "opset": int(opset),
        "dtype": "float32",
        "settings": dict(sorted(settings.items())),
        "torch": torch.__version__,
        "onnx": _version("onnx"),
    }


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 16 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _discard(folder: Path) -> None:
    """Move `folder` out of its key's place in one rename, then delete it (a reader never sees half of it)."""
    aside = folder.parent / f".{folder.name}.{os.getpid()}.{secrets.token_hex(4)}{PART_SUFFIX}"
    with contextlib.suppress(OSError):
        os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)


def _valid(entry: Path) -> bool:
    """Whether `entry` holds a graph whose bytes match its recorded sha256; warns about a damaged entry."""
    graph, recorded = entry / GRAPH_NAME, entry / f"{GRAPH_NAME}.sha256"
    if not entry.is_dir():
        return False
    try:
        ok = recorded.read_text().split()[0] == file_sha256(graph)
    except (OSError, IndexError):
        ok = False
    if not ok:
        _warn(f"the cached renderer graph {entry} is damaged (its sha256 does not match); exporting it again")
        _discard(entry)
    return ok


def cached_graph(folder: str | os.PathLike, key: Mapping, export: Callable[[Path], None]) -> Path | None:
    """The cached graph for `key` under `folder` (on a miss export(path) writes it, then it is stored); None, after
    one warning line, when the cache folder cannot be written."""
    folder = Path(folder)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    entry = folder / name
    if _valid(entry):
        return entry / GRAPH_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(folder)  # folders of exports that were killed
        part = Path(folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}{PART_SUFFIX}")
        part.mkdir()
    except OSError as exc:
        _warn(f"cannot write the renderer graph cache {folder} ({describe_os_error(exc)}); exporting without it")
        return None
    try:
        export(part / GRAPH_NAME)
        (part / f"{GRAPH_NAME}.sha256").write_text(f"{file_sha256(part / GRAPH_NAME)}  {GRAPH_NAME}\n")
        (part / "key.json").write_text(json.dumps(key, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(part, entry)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # another process stored the same key first: its entry is the same graph
            if not _valid(entry):
                os.rename(part, entry)
    except OSError as exc:
        _warn(f"cannot write the renderer graph cache {folder} ({describe_os_error(exc)}); exporting without it")
        return None
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return entry / GRAPH_NAME
