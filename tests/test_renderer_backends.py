"""Renderer backends and the ONNX export, at small sizes: the graphs compute what the PyTorch modules compute."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime
import pytest
import torch
from test_renderer_batch import small_renderer

from kdtalker.errors import CheckpointError, ConfigError
from kdtalker.renderer.backends import GRAPH_BACKENDS, GraphWarpDecode
from kdtalker.renderer.export import MOTION_OUTPUTS, WARP_DECODE_INPUTS, export_renderer, verify_warp_decode
from kdtalker.renderer.renderer import packaged_graph_opset
from kdtalker.renderer.spade import SPADEResnetBlock, SpectralNormConv2d
from kdtalker.renderer.warping import UpBlock3d

pytestmark = pytest.mark.usefixtures("one_thread")

# float32 graphs against the eager modules: the same products in another order (the graph runs upsample-then-conv,
# the eager renderer polyphase convs; runtimes fuse and reorder). Largest difference seen: 9e-6 (frames in [0, 1]).
FRAME_ATOL = 3e-5
OPSET = packaged_graph_opset()  # renderer.graph_opset of the packaged config
SIZE = 64  # small_renderer: 64x64 source -> (4, 16, 16, 16) volume -> 128x128 frames


@pytest.fixture(scope="module")
def case():
    """The eager renderer, one source and 5 driving keypoint sets, with the frames PyTorch renders for them."""
    renderer = small_renderer()
    rgb = np.random.RandomState(0).randint(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    source = renderer.encode_source(rgb)
    x_d = source.x_s + 0.05 * torch.randn(5, 21, 3, generator=torch.Generator().manual_seed(1))
    return renderer, rgb, source, x_d, renderer.render(source, x_d)


@pytest.fixture(scope="module")
def exported(case, tmp_path_factory):
    """export_renderer with a dynamic batch axis, once for the module."""
    out = tmp_path_factory.mktemp("exported")
    manifest = export_renderer(case[0], out, OPSET, None, SIZE)
    return out, manifest


def _session(path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_prepare_builds_every_cache_before_forward(case):
    """Construction builds the lazy weight caches (a trace must only read them); a forward adds none."""
    renderer = small_renderer()
    convs = [m for m in renderer.decoder.modules() if isinstance(m, SpectralNormConv2d)]
    ups = [m for m in renderer.warping.modules() if isinstance(m, UpBlock3d)]
    blocks = {n: m for n, m in renderer.decoder.named_children() if isinstance(m, SPADEResnetBlock)}
    assert convs and ups and len(blocks) == 8
    assert all(c.weight_cached is not None for c in convs)
    assert all(len(u._phases) == 1 for u in ups)
    factors = {n: [k[0] for k in b._fused] for n, b in blocks.items()}
    assert factors == {**{f"G_middle_{i}": [1] for i in range(6)}, "up_0": [2], "up_1": [4]}
    before = {id(c): c.weight_cached for c in convs}
    eager, rgb, source, x_d, _ = case
    frames = renderer.render(renderer.encode_source(rgb), x_d[:1])
    torch.testing.assert_close(frames, eager.render(source, x_d[:1]), rtol=0, atol=0)
    assert all(c.weight_cached is before[id(c)] for c in convs)
    assert {n: [k[0] for k in b._fused] for n, b in blocks.items()} == factors


def test_export_leaves_the_renderer_as_it_was(case, exported):
    """The export (done by the `exported` fixture) keeps every module in eval mode: the same frames after it."""
    renderer, _, source, x_d, want = case
    assert not any(m.training for m in renderer.modules())
    torch.testing.assert_close(renderer.render(source, x_d), want, rtol=0, atol=0)


def test_export_script_verifies_its_graph(case, exported):
    """verify_warp_decode (the script's verify=true): onnxruntime vs PyTorch on the trace's inputs, after the export."""
    assert verify_warp_decode(case[0], exported[0], SIZE, None) < FRAME_ATOL


def test_export_writes_the_graphs_and_their_manifest(exported):
    out, manifest = exported
    assert json.loads((out / "export.json").read_text()) == manifest
    assert manifest["opset"] == OPSET and manifest["batch"] == "dynamic" and manifest["image_size"] == SIZE
    names = sorted(p.name for p in out.iterdir())
    assert names == ["appearance.onnx", "export.json", "motion.onnx", "warp_decode.onnx"]
    inputs = _session(out / "warp_decode.onnx").get_inputs()
    assert [i.name for i in inputs] == list(WARP_DECODE_INPUTS)
    assert inputs[3].shape == ["batch", 21, 3] and inputs[0].shape == [1, 4, 16, 16, 16]


@pytest.mark.parametrize("batch", [1, 3])
def test_exported_warp_decode_round_trips_in_onnxruntime(case, exported, batch):
    """The dynamic-batch graph at two batch sizes equals PyTorch's frames."""
    _, _, source, x_d, want = case
    feeds = dict(zip(WARP_DECODE_INPUTS, (source.f_s, source.compressed, source.x_s, x_d[:batch])))
    got = _session(exported[0] / "warp_decode.onnx").run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    assert got.shape == (batch, 3, 2 * SIZE, 2 * SIZE)
    np.testing.assert_allclose(got, want[:batch].numpy(), rtol=0, atol=FRAME_ATOL)


def test_exported_extractors_round_trip_in_onnxruntime(case, exported):
    renderer, rgb, *_ = case
    image = torch.cat([renderer.prepare_image(rgb), renderer.prepare_image(rgb[::-1].copy())])  # batch 2
    with torch.inference_mode():
        f_s, heads = renderer.appearance(image), renderer.motion(image)
    got = _session(exported[0] / "appearance.onnx").run(None, {"image": image.numpy()})[0]
    np.testing.assert_allclose(got, f_s.numpy(), rtol=0, atol=1e-5 * float(f_s.abs().max()))
    outs = _session(exported[0] / "motion.onnx").run(None, {"image": image.numpy()})
    for name, got in zip(MOTION_OUTPUTS, outs):
        want = heads[name].numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()), err_msg=name)


def test_static_batch_export(case, tmp_path):
    """batch=N: every graph has the static batch N (no symbolic axis left) and still computes the same."""
    renderer, _, source, x_d, want = case
    manifest = export_renderer(renderer, tmp_path, OPSET, 2, SIZE)
    assert manifest["batch"] == 2
    session = _session(tmp_path / "warp_decode.onnx")
    assert session.get_inputs()[3].shape == [2, 21, 3] and session.get_outputs()[0].shape == [2, 3, 128, 128]
    assert _session(tmp_path / "motion.onnx").get_inputs()[0].shape == [2, 3, SIZE, SIZE]
    feeds = dict(zip(WARP_DECODE_INPUTS, (source.f_s, source.compressed, source.x_s, x_d[:2])))
    got = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    np.testing.assert_allclose(got, want[:2].numpy(), rtol=0, atol=FRAME_ATOL)


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_graph_backends_render_the_same_frames(case, exported, backend):
    """renderer.backend=onnxruntime|openvino through the same render API; 5 frames in chunks of 2 (a short tail)."""
    _, rgb, _, x_d, want = case
    renderer = small_renderer(backend=backend, graph=exported[0] / "warp_decode.onnx")
    frames = renderer.render(renderer.encode_source(rgb), x_d)
    assert frames.shape == want.shape and frames.dtype == torch.float32
    torch.testing.assert_close(frames, want, rtol=0, atol=FRAME_ATOL)


def test_graph_backend_reads_channels_last_sources(case, exported):
    """A channels-last renderer (the AVX-512 default) hands its channels-last f_s to the graph in C order."""
    _, rgb, _, x_d, want = case
    renderer = small_renderer(memory_format="channels_last", backend="openvino", graph=exported[0] / "warp_decode.onnx")
    source = renderer.encode_source(rgb)
    assert not source.f_s.is_contiguous()
    torch.testing.assert_close(renderer.render(source, x_d[:2]), want[:2], rtol=0, atol=FRAME_ATOL)


def test_graph_backend_exports_on_first_render(case):
    """Without `graph` the backend traces the loaded weights itself (on the first render, once)."""
    _, rgb, _, x_d, want = case
    renderer = small_renderer(backend="onnxruntime")
    source = renderer.encode_source(rgb)
    torch.testing.assert_close(renderer.render(source, x_d[:1]), want[:1], rtol=0, atol=FRAME_ATOL)
    graph = renderer._graph
    torch.testing.assert_close(renderer.render(source, x_d[3:]), want[3:], rtol=0, atol=FRAME_ATOL)
    assert renderer._graph is graph


def test_inductor_backend_is_the_compiled_renderer():
    assert small_renderer(backend="inductor").compile_modules is True
    assert small_renderer().compile_modules is False


def test_backend_errors_are_one_clear_message(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="renderer.backend='tensorrt' is not one of"):
        small_renderer(backend="tensorrt")
    with pytest.raises(ConfigError, match="runs in float32"):
        small_renderer(backend="openvino").to(torch.bfloat16)
    with pytest.raises(CheckpointError, match="is not a file"):
        GraphWarpDecode.load("onnxruntime", tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(CheckpointError, match="cannot be loaded by openvino"):
        GraphWarpDecode.load("openvino", tmp_path / "bad.onnx")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the package were not installed
    with pytest.raises(ConfigError, match=r"needs the openvino package: pip install openvino"):
        small_renderer(backend="openvino")


def test_export_script_errors_are_one_line(tmp_path):
    """No out=, a bad batch, or missing weights: one error line, exit 1, nothing written."""
    from test_safe_loading import one_error_line, run_script

    result = run_script("scripts/export_renderer.py")
    assert result.returncode == 1 and "out=DIR is required" in one_error_line(result)
    out = tmp_path / "exported"
    result = run_script("scripts/export_renderer.py", f"out={out}", "batch=0")
    assert result.returncode == 1 and "batch=0" in one_error_line(result)
    result = run_script("scripts/export_renderer.py", f"out={out}", f"checkpoint_dir={tmp_path / 'none'}")
    assert result.returncode == 1 and "liveportrait" in one_error_line(result)
    assert not out.exists()


def test_auto_backend_is_openvino_for_a_cached_float32_cpu_renderer(monkeypatch, tmp_path):
    """backend=auto: openvino on the CPU in float32 with a graph cache (or graph), torch otherwise or without it."""
    assert small_renderer(backend="auto").backend == "torch"  # no cache: every process would export
    renderer = small_renderer(backend="auto", graph_cache=tmp_path)
    assert renderer.backend == "openvino"
    assert renderer.to(torch.bfloat16).backend == "torch"  # follows the dtype, no error
    assert renderer.to(torch.float32).backend == "openvino"
    assert small_renderer(backend="auto", graph_cache=tmp_path, compile_modules=True).backend == "torch"
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the package were not installed
    assert small_renderer(backend="auto", graph_cache=tmp_path).backend == "torch"
