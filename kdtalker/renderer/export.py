"""ONNX export of the renderer: warping + decoder as one graph, and the two source extractors.

The graphs are traced (the TorchScript exporter, `torch.onnx.export(..., dynamo=False)`: it needs no package
beyond torch) from the modules as they run at inference, with two settings switched for the trace only:

- the 3-D trilinear samples use `grid_sample_3d_portable` (gathers and multiply-adds): ONNX's GridSample is 2-D up to
  opset 19, and OpenVINO's is 2-D only;
- the convolutions after a nearest upsampling run in the official order (upsample, then the 3x3 conv), not as
  polyphase convs on the small input: the exporter cannot type the sliced windows those convs read. The runtimes
  apply their own graph optimisations instead.

Folded BatchNorms, the spectral-norm weights and the fused SPADE convs of a block are read from their caches, built
before the trace (`LivePortraitRenderer.prepare`), so they appear in the graph as constants.

Graphs (inputs -> outputs, float32; B is `batch` or, with batch None, a dynamic axis):

    warp_decode.onnx  f_s (1, 32, 16, 64, 64), compressed (1, 4, 16, 64, 64), x_s (1, 21, 3), x_d (B, 21, 3)
                      -> frames (B, 3, 512, 512) in [0, 1]
    appearance.onnx   image (B, 3, 256, 256) in [0, 1] -> f_s (B, 32, 16, 64, 64)
    motion.onnx       image (B, 3, 256, 256) -> pitch, yaw, roll (B, 66), t (B, 3), exp, kp (B, 63), scale (B, 1)

`compressed` is the dense-motion network's source-only compression of f_s (`Source.compressed`).
"""

from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from kdtalker.errors import OutputError
from kdtalker.fileio import atomic_path, describe_os_error, write_text_atomic
from kdtalker.renderer.spade import SPADEDecoder, SPADEResnetBlock
from kdtalker.renderer.warping import UpBlock3d, WarpingNetwork

WARP_DECODE_INPUTS = ("f_s", "compressed", "x_s", "x_d")
MOTION_OUTPUTS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")
GRAPH_FILES = {"warp_decode": "warp_decode.onnx", "appearance": "appearance.onnx", "motion": "motion.onnx"}


class WarpDecode(nn.Module):
    """Warping + decoder as one module of tensors only: (f_s, compressed, x_s, x_d) -> frames (B, 3, 512, 512)."""

    def __init__(self, warping: WarpingNetwork, decoder: SPADEDecoder):
        super().__init__()
        self.warping = warping
        self.decoder = decoder

    def forward(self, f_s: torch.Tensor, compressed: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor):
        warped = self.warping(f_s, x_d, x_s, compressed=compressed)["out"]
        return self.decoder(warped)


class MotionHeads(nn.Module):
    """The motion extractor with its dict of heads as a tuple in MOTION_OUTPUTS order (graphs have no dicts)."""

    def __init__(self, motion: nn.Module):
        super().__init__()
        self.motion = motion

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.motion(image)
        return tuple(out[name] for name in MOTION_OUTPUTS)


@contextmanager
def traceable(*modules: nn.Module) -> Iterator[None]:
    """Within the block: portable 3-D sampling and the official upsample-then-conv order (see the module doc)."""
    saved = []
    for root in modules:
        for m in root.modules():
            if isinstance(m, (SPADEResnetBlock, UpBlock3d)):
                saved.append((m, "fused", m.fused))
                m.fused = False
            if hasattr(m, "grid_sample") and isinstance(m.grid_sample, str):
                saved.append((m, "grid_sample", m.grid_sample))
                m.grid_sample = "portable"
    try:
        yield
    finally:
        for m, name, value in saved:
            setattr(m, name, value)


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    batched: tuple[str, ...],
    opset: int,
    dynamic_batch: bool,
) -> None:
    """Trace `module` on `args` into the ONNX file `path`; the names in `batched` get a dynamic axis 0 if asked."""
    axes = {name: {0: "batch"} for name in batched} if dynamic_batch else None
    # eval first: the exporter puts the module back in its former mode afterwards, recursively, and a fresh wrapper
    # starts in training mode (it would leave every BatchNorm of the renderer updating its statistics)
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns about every Python int it records (shapes); with a static graph they are what we want
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def export_warp_decode(
    warping: WarpingNetwork,
    decoder: SPADEDecoder,
    example: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    path: str | os.PathLike,
    opset: int,
    dynamic_batch: bool,
) -> None:
    """Warping + decoder -> one ONNX graph at `path`; example = (f_s, compressed, x_s, x_d), float32 on the CPU."""
    with traceable(warping, decoder):
        _export(
            WarpDecode(warping, decoder),
            tuple(t.contiguous() for t in example),
            Path(path),
            WARP_DECODE_INPUTS,
            ("frames",),
            ("x_d", "frames"),
            opset,
            dynamic_batch,
        )


def example_inputs(renderer: nn.Module, image_size: int, batch: int) -> tuple[torch.Tensor, tuple]:
    """The trace's inputs: a mid-grey source image (batch, 3, S, S) and (f_s, compressed, x_s, x_d (batch, 21, 3))."""
    image = torch.full((batch, 3, image_size, image_size), 0.5, dtype=renderer.dtype, device=renderer.device)
    with torch.no_grad():
        renderer.prepare()
        f_s = renderer.appearance(image[:1])
        compressed = renderer.warping.dense_motion_network.compress_source(f_s)
        x_s = renderer.transform(renderer.keypoint_info(image[:1]))
        x_d = x_s + 0.01 * torch.randn(batch, *x_s.shape[1:], generator=torch.Generator().manual_seed(0))
    return image, (f_s, compressed, x_s, x_d)


def verify_warp_decode(renderer: nn.Module, out: str | os.PathLike, image_size: int, batch: int | None) -> float:
    """Max |frames in onnxruntime - frames in PyTorch| of out/warp_decode.onnx on the trace's example inputs."""
    import numpy as np
    import onnxruntime

    _, example = example_inputs(renderer, image_size, batch or 1)
    session = onnxruntime.InferenceSession(
        str(Path(out) / GRAPH_FILES["warp_decode"]), providers=["CPUExecutionProvider"]
    )
    # onnxruntime reads an array's buffer as C-ordered: a channels-last f_s must be copied to that order first
    feeds = {name: np.ascontiguousarray(t.numpy()) for name, t in zip(WARP_DECODE_INPUTS, example)}
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        want = WarpDecode(renderer.warping, renderer.decoder)(*example)
    return float(np.abs(got - want.numpy()).max())


def export_renderer(
    renderer: nn.Module, out: str | os.PathLike, opset: int, batch: int | None, image_size: int
) -> dict:
    """A float32 CPU LivePortraitRenderer -> out/{warp_decode,appearance,motion}.onnx + export.json; that dict.

    batch None: a dynamic batch axis (x_d / image and the outputs); an int: graphs of that static batch. The example
    inputs: a mid-grey image as the source, its keypoints moved slightly as the driving ones. Each file is written
    atomically (a stopped export leaves no partial graph); export.json comes last.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"out={out} exists and is not a folder")
    image, (f_s, compressed, x_s, x_d) = example_inputs(renderer, image_size, batch or 1)
    dynamic = batch is None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create out={out}: {describe_os_error(exc)}") from None
    with atomic_path(out / GRAPH_FILES["warp_decode"], "ONNX graph") as tmp:
        export_warp_decode(renderer.warping, renderer.decoder, (f_s, compressed, x_s, x_d), tmp, opset, dynamic)
    with atomic_path(out / GRAPH_FILES["appearance"], "ONNX graph") as tmp:
        _export(renderer.appearance, (image,), tmp, ("image",), ("f_s",), ("image", "f_s"), opset, dynamic)
    with atomic_path(out / GRAPH_FILES["motion"], "ONNX graph") as tmp:
        batched = ("image",) + MOTION_OUTPUTS
        _export(MotionHeads(renderer.motion), (image,), tmp, ("image",), MOTION_OUTPUTS, batched, opset, dynamic)
    manifest = {
        "opset": opset,
        "batch": "dynamic" if dynamic else batch,
        "dtype": "float32",
        "image_size": image_size,
        "torch": torch.__version__,
        "graphs": {
            "warp_decode": {
                "file": GRAPH_FILES["warp_decode"],
                "inputs": list(WARP_DECODE_INPUTS),
                "outputs": ["frames"],
            },
            "appearance": {"file": GRAPH_FILES["appearance"], "inputs": ["image"], "outputs": ["f_s"]},
            "motion": {"file": GRAPH_FILES["motion"], "inputs": ["image"], "outputs": list(MOTION_OUTPUTS)},
        },
    }
    write_text_atomic(out / "export.json", json.dumps(manifest, indent=2) + "\n", "export manifest")
    return manifest
