"""Renderer speed: ours against the official op sequence, side by side in one run, float32 and bfloat16.

    python scripts/benchmark.py renderer [--device auto] [--batch-sizes 1 4] [--repeats 2] [--dtypes float32 bfloat16]
    python scripts/benchmark.py renderer --backend torch openvino onnxruntime inductor [--batch-sizes 1 4]

Both sides are the same modules with the same (random, full-size) weights: speed does not depend on the values.
The reference runs what LivePortrait's own modules do: BatchNorm unfolded, NCHW, each SPADE on its own,
upsample-then-conv, the source compression redone for every frame, float32. Ours: the renderer as configured
(folded BatchNorm, fused ops, memory format `auto`, source work once). Runs alternate (reference, ours, ...) so
drift of the machine's speed hits both; the best of --repeats is reported. For bfloat16, where the device runs it,
the error against our float32 output is printed per stage (warped features, decoded frame).

--backend: float32 on the CPU, the official modules against ours on each named backend (renderer.backend), all in
one process, in rounds (reference, then each backend in turn); per backend its speed-up and max error against the
official frames. A graph backend's export and load, and inductor's compile, happen in the warm-up, not timed.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from kdtalker.device import check_dtype, cpu_name, resolve_device, resolve_dtype
from kdtalker.errors import ConfigError
from kdtalker.renderer import (
    AppearanceFeatureExtractor,
    LivePortraitRenderer,
    MotionExtractor,
    SPADEDecoder,
    WarpingNetwork,
)
from kdtalker.renderer import checkpoints as ckpt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--dtypes", nargs="+", default=None, help="default: float32 bfloat16 on CPU, float32 float16 bfloat16 on a GPU"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: 1 4 on CPU, 1 8 32 on a GPU")
    parser.add_argument("--repeats", type=int, default=2, help="timed renders per side and batch size (best kept)")
    parser.add_argument("--memory-format", default="auto", help="ours: auto | contiguous | channels_last")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--compile", action="store_true", help="ours with compile=true (one compile per batch size)")
    parser.add_argument("--no-fuse", action="store_true", help="ours with fuse_ops=false (upsample, then conv)")
    parser.add_argument(
        "--backend",
        nargs="+",
        default=None,
        help="compare renderer backends (float32, CPU): torch inductor onnxruntime openvino",
    )
    parser.add_argument(
        "--graph-cache", default=None, help="--backend: the graph cache folder (renderer.graph_cache); default none"
    )
    parser.add_argument(
        "--int8", action="store_true", help="int8 graphs (onnxruntime quantize_static) vs float32 and official"
    )
    parser.add_argument("--calibration-frames", type=int, default=4, help="--int8: driving poses calibrated on")
    parser.add_argument("--small", action="store_true", help="small widths and a 64 px source: a smoke run only")
    parser.add_argument(
        "--checkpoint-dir",
        default=None,
        help="load these weights (DIR/liveportrait/base_models, e.g. the fixture or official ones) instead of random",
    )
    parser.add_argument("--json", default=None, help="also append the figures to this JSON-lines file")


def _modules(small: bool, checkpoint_dir: str | None) -> tuple[list, int]:
    """[F, M, W, G] with random weights (full-size official configs, or small widths) or the weights in
    checkpoint_dir/liveportrait, and the source's side."""
    if checkpoint_dir is not None:
        files = ckpt.liveportrait_files(Path(checkpoint_dir) / "liveportrait")
        cpu, full = torch.device("cpu"), torch.float32
        loaders = {
            "appearance_feature_extractor": ckpt.load_appearance_feature_extractor,
            "motion_extractor": ckpt.load_motion_extractor,
            "warping_module": ckpt.load_warping_module,
            "spade_generator": ckpt.load_spade_generator,
        }
        return [load(files[name], cpu, full, None) for name, load in loaders.items()], 256
    if not small:
        return [AppearanceFeatureExtractor(), MotionExtractor(), WarpingNetwork(), SPADEDecoder()], 256
    motion = {"block_expansion": 8, "max_features": 32, "num_blocks": 2, "reshape_depth": 16, "compress": 2}
    return [
        AppearanceFeatureExtractor(block_expansion=8, max_features=64, reshape_channel=4, num_resblocks=1),
        MotionExtractor(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
        WarpingNetwork(block_expansion=8, max_features=64, reshape_channel=4, dense_motion_params=motion),
        SPADEDecoder(max_features=32, block_expansion=8),
    ], 64


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn) -> tuple[float, torch.Tensor]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def _error(got: torch.Tensor, want: torch.Tensor) -> str:
    diff = (got.float() - want.float()).abs()
    scale = want.float().abs().max().clamp_min(1e-12)
    return f"max |err| {diff.max():.2e} ({diff.max() / scale:.2%} of max), mean |err| {diff.mean():.2e}"


def run(args: argparse.Namespace) -> None:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    batch_sizes = args.batch_sizes or ([1, 8, 32] if device.type == "cuda" else [1, 4])
    dtypes = args.dtypes or (["float32", "float16", "bfloat16"] if device.type == "cuda" else ["float32", "bfloat16"])
    torch.manual_seed(0)
    modules, image_size = _modules(args.small, args.checkpoint_dir)
    reference = LivePortraitRenderer(
        *copy.deepcopy(modules), fold_batchnorm=False, fuse_ops=False, memory_format="contiguous"
    ).to(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu_name()}"
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    if args.checkpoint_dir:
        weights = f"weights of {args.checkpoint_dir}, full-size official configs"
    else:
        sizes = "small widths (a smoke run: the figures mean nothing)" if args.small else "full-size official configs"
        weights = f"weights random, {sizes}"
    print(f"renderer benchmark on {where}{threads}; {weights}", flush=True)
    if args.int8:
        from benchmarks.renderer_int8 import run_int8

        if device.type != "cpu":
            raise ConfigError("--int8 measures CPU runtimes: use --device cpu")
        return run_int8(args, modules, reference, batch_sizes, image_size)
    if args.backend:
        return _run_backends(args, modules, reference, batch_sizes, where, image_size)

    image = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    ref_source = reference.encode_source(image)
    gen = torch.Generator().manual_seed(1)
    drive = ref_source.x_s.cpu() + 0.02 * torch.randn(max(batch_sizes), 21, 3, generator=gen)

    def reference_render(x_d: torch.Tensor) -> torch.Tensor:
        # the official wrapper: warping_module(f_s, kp_source, kp_driving) then the SPADE generator, per call
        return reference.warp_decode(ref_source.f_s, ref_source.x_s, x_d.to(device))["out"]

    float32_ours = None
    for dtype_name in dtypes:
        dtype = resolve_dtype(dtype_name)
        try:
            check_dtype(device, dtype)
        except ConfigError as exc:
            print(f"{dtype_name}: skipped: {exc}", flush=True)
            continue
        ours = LivePortraitRenderer(
            *copy.deepcopy(modules),
            memory_format=args.memory_format,
            compile_modules=args.compile,
            fuse_ops=not args.no_fuse,
        ).to(device, dtype)
        source = ours.encode_source(image)
        print(
            f"{dtype_name}: ours = fold_batchnorm, fuse_ops={not args.no_fuse}, channels_last={ours.channels_last}, "
            f"compile={args.compile}; warm-up ...",
            flush=True,
        )
        reference_render(drive[:1])
        ours.render(source, drive[:1])
        for batch in batch_sizes:
            x_d = drive[:batch]
            reference_render(x_d)  # warm-up at this size (cuDNN's algorithm choice; the compile of this shape)
            ours.render(source, x_d, chunk_size=batch)
            times: dict[str, list[float]] = {"reference": [], "ours": []}
            for _ in range(args.repeats):
                seconds, want = _timed(device, lambda: reference_render(x_d))
                times["reference"].append(seconds)
                seconds, got = _timed(device, lambda: ours.render(source, x_d, chunk_size=batch))
                times["ours"].append(seconds)
            ref_s, our_s = min(times["reference"]) / batch, min(times["ours"]) / batch
            print(
                f"  batch {batch:3d}: reference (official ops, float32) {1 / ref_s:7.3f} frames/s ({ref_s:.2f} s/frame)"
                f" | ours ({dtype_name}) {1 / our_s:7.3f} frames/s ({our_s:6.2f} s/frame) | x{ref_s / our_s:.2f}",
                flush=True,
            )
            if args.json:
                _record(args.json, where, dtype_name, batch, args.compile, ref_s, our_s)
            if dtype == torch.float32 and batch == batch_sizes[0]:
                float32_ours = (ours, source, x_d)
                print(f"    ours float32 vs reference: frames {_error(got, want)}", flush=True)
            elif dtype != torch.float32 and float32_ours is not None and batch == batch_sizes[0]:
                _print_stage_errors(float32_ours, ours, source, x_d)


def _record(path: str, where: str, dtype: str, batch: int, compiled: bool, ref_s: float, our_s: float) -> None:
    import json

    with open(path, "a") as fh:
        figures = {"benchmark": "renderer", "device": where, "dtype": dtype, "batch": batch, "compile": compiled}
        fh.write(json.dumps({**figures, "reference_fps": 1 / ref_s, "ours_fps": 1 / our_s, "torch": torch.__version__}))
        fh.write("\n")


def _print_stage_errors(float32_side: tuple, ours: LivePortraitRenderer, source, x_d: torch.Tensor) -> None:
    """Per stage, the half-precision renderer against our float32 one on the same input."""
    full, full_source, _ = float32_side
    with torch.inference_mode():
        want_w = full.warping(full_source.f_s, x_d.to(full.device), full_source.x_s, compressed=full_source.compressed)
        got_w = ours.warping(source.f_s, x_d.to(ours.device), source.x_s, source.compressed)  # float32 keypoints
        want_g = full.decoder(want_w["out"])
        got_g = ours.decoder(got_w["out"])
    print(f"    error vs float32: warped features {_error(got_w['out'], want_w['out'])}", flush=True)
    print(f"    error vs float32: decoded frames  {_error(got_g, want_g)}", flush=True)


def _run_backends(
    args: argparse.Namespace, modules: list, reference, batch_sizes: list[int], where: str, image_size: int
) -> None:
    """The official modules against each renderer backend, float32, rounds alternating over all of them."""
    if reference.device.type != "cpu":
        raise ConfigError("--backend compares CPU backends: use --device cpu")
    image = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    ref_source = reference.encode_source(image)
    gen = torch.Generator().manual_seed(1)
    drive = ref_source.x_s + 0.02 * torch.randn(max(batch_sizes), 21, 3, generator=gen)
    sides = {}
    for name in args.backend:
        renderer = LivePortraitRenderer(
            *copy.deepcopy(modules), memory_format=args.memory_format, backend=name, graph_cache=args.graph_cache
        )
        sides[name] = (renderer, renderer.encode_source(image))
    for batch in batch_sizes:
        x_d = drive[:batch]
        if batch == batch_sizes[0]:
            reference.warp_decode(ref_source.f_s, ref_source.x_s, x_d[:1])  # warm-up
        for name, (renderer, source) in sides.items():
            if batch == batch_sizes[0] or name == "inductor":  # graphs have a dynamic batch; inductor one per size
                start = time.perf_counter()
                renderer.render(source, x_d[:1] if name != "inductor" else x_d, chunk_size=batch)
                print(f"  {name}: warm-up (export + load, or compile) {time.perf_counter() - start:.1f} s", flush=True)
        times: dict[str, list[float]] = {"reference": [], **{name: [] for name in sides}}
        errors = {}
        for _ in range(args.repeats):
            seconds, want = _timed(
                reference.device, lambda: reference.warp_decode(ref_source.f_s, ref_source.x_s, x_d)["out"]
            )
            times["reference"].append(seconds)
            for name, (renderer, source) in sides.items():
                seconds, got = _timed(reference.device, lambda: renderer.render(source, x_d, chunk_size=batch))
                times[name].append(seconds)
                errors[name] = float((got.float() - want.float()).abs().max())
        ref_s = min(times["reference"]) / batch
        print(f"  batch {batch:3d}: official modules (float32) {ref_s:6.2f} s/frame", flush=True)
        for name in sides:
            our_s = min(times[name]) / batch
            print(
                f"  batch {batch:3d}: ours, backend={name:<11} {our_s:6.2f} s/frame | x{ref_s / our_s:.2f} | "
                f"max |err| vs official {errors[name]:.2e}",
                flush=True,
            )
            if args.json:
                _record(args.json, where, f"float32 backend={name}", batch, name == "inductor", ref_s, our_s)
