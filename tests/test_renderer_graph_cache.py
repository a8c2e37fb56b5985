"""The cache of exported graphs (renderer.graph_cache): a graph backend exports once, not once per process."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from test_renderer_backends import FRAME_ATOL, SIZE
from test_renderer_batch import small_renderer

from kdtalker.renderer import backends
from kdtalker.renderer.graph_cache import GRAPH_NAME, cached_graph, graph_key


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def case():
    """One source and 3 driving keypoint sets, with the frames the eager renderer gives."""
    renderer = small_renderer()
    source = renderer.encode_source(np.random.RandomState(0).randint(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    x_d = source.x_s + 0.05 * torch.randn(3, 21, 3, generator=torch.Generator().manual_seed(1))
    return source, x_d, renderer.render(source, x_d)


@pytest.fixture
def exports(monkeypatch) -> list:
    """Counts the graph exports the backends run (each call records the path written)."""
    calls = []
    export = backends.export_warp_decode

    def counted(warping, decoder, example, path, opset, dynamic_batch):
        calls.append(path)
        export(warping, decoder, example, path, opset, dynamic_batch)

    monkeypatch.setattr(backends, "export_warp_decode", counted)
    return calls


def _render(cache, case, **options) -> torch.Tensor:
    """A fresh renderer (as a new process builds it) with backend=onnxruntime renders the case's frames."""
    source, x_d, _ = case
    renderer = small_renderer(backend="onnxruntime", graph_cache=cache, **options)
    return renderer.render(renderer.source(source.f_s, source.x_s), x_d)


def _entries(cache) -> list[str]:
    return sorted(p.name for p in cache.iterdir())


def test_the_second_renderer_loads_the_cached_graph(case, exports, tmp_path, capsys):
    """The first renderer exports into the cache; a new one with the same weights and settings only loads it."""
    cache = tmp_path / "graphs"
    torch.testing.assert_close(_render(cache, case), case[2], rtol=0, atol=FRAME_ATOL)
    assert len(exports) == 1
    (entry,) = _entries(cache)  # no part folders left beside it
    assert sorted(p.name for p in (cache / entry).iterdir()) == sorted([GRAPH_NAME, f"{GRAPH_NAME}.sha256", "key.json"])
    torch.testing.assert_close(_render(cache, case), case[2], rtol=0, atol=FRAME_ATOL)
    assert len(exports) == 1 and capsys.readouterr().err == ""


class Exports:
    """A stand-in export that writes a few bytes and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, path):
        self.calls += 1
        path.write_bytes(b"graph bytes " * 100)


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_digest", "no_graph"])
def test_a_damaged_entry_is_exported_again_with_one_warning(tmp_path, capsys, damage):
    export = Exports()
    graph = cached_graph(tmp_path, {"k": 0}, export)
    data = graph.read_bytes()
    if damage == "truncate":
        graph.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        graph.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    else:
        (graph.parent / (f"{GRAPH_NAME}.sha256" if damage == "no_digest" else GRAPH_NAME)).unlink()
    assert cached_graph(tmp_path, {"k": 0}, export) == graph and export.calls == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: the cached renderer graph") and "damaged" in err[0]
    assert _entries(tmp_path) == [graph.parent.name] and graph.read_bytes() == data
    assert cached_graph(tmp_path, {"k": 0}, export) == graph and export.calls == 2 and capsys.readouterr().err == ""


def test_an_unwritable_cache_costs_a_warning_not_the_run(tmp_path, capsys):
    """A cache path that cannot be a folder: None (the caller exports without the cache) and one warning line."""
    cache = tmp_path / "graphs"
    cache.write_text("a file, not a folder")
    assert cached_graph(cache, {"k": 0}, Exports()) is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: cannot write the renderer graph cache")
    assert cache.read_text() == "a file, not a folder"


def test_the_key_follows_weights_inputs_opset_and_settings():
    renderer = small_renderer()
    modules = (renderer.warping, renderer.decoder)
    inputs = (torch.zeros(1, 4, 16, 16, 16), torch.zeros(1, 21, 3))
    key = graph_key(modules, inputs, 17, {"fuse_ops": True})
    assert graph_key(modules, inputs, 17, {"fuse_ops": True}) == key
    assert graph_key(modules, inputs, 18, {"fuse_ops": True}) != key
    assert graph_key(modules, inputs, 17, {"fuse_ops": False}) != key
    assert graph_key(modules, inputs[:1] + (torch.zeros(1, 20, 3),), 17, {"fuse_ops": True}) != key
    with torch.no_grad():
        renderer.decoder.fc.weight.view(-1)[0] += 1e-6  # one weight, changed by a rounding error
    assert graph_key(modules, inputs, 17, {"fuse_ops": True})["weights_sha256"] != key["weights_sha256"]


def test_two_processes_storing_one_key_keep_one_entry(tmp_path):
    """While one export runs, another process stores the same key: the first finds it there and uses it."""
    written = []

    def export(text):
        def write(path):
            written.append(text)
            path.write_text(text)

        return write

    def racing(path):
        cached_graph(tmp_path, {"k": 1}, export("other process"))  # finishes first
        export("this process")(path)

    got = cached_graph(tmp_path, {"k": 1}, racing)
    assert written == ["other process", "this process"] and got.read_text() == "other process"
    assert len(_entries(tmp_path)) == 1  # this process's part folder is gone
    assert cached_graph(tmp_path, {"k": 1}, export("again")).read_text() == "other process"


def test_parts_of_killed_exports_are_removed(tmp_path):
    dead = tmp_path / f".abc.{2**22 + 12345}.0a0b0c0d.part"  # a pid beyond pid_max: no such process
    dead.mkdir()
    (dead / GRAPH_NAME).write_text("half a graph")
    live = tmp_path / f".abc.{os.getpid()}.0a0b0c0d.part"
    live.mkdir()
    cached_graph(tmp_path, {"k": 2}, lambda path: path.write_text("graph"))
    assert not dead.exists() and live.exists()
