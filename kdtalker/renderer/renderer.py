"""LivePortraitRenderer: the renderer API the pipeline uses (source features once, then batches of frames)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from kdtalker.config import CONFIG_DIR
from kdtalker.device import resolve_device, resolve_dtype
from kdtalker.errors import ConfigError, ImageError
from kdtalker.renderer import checkpoints as ckpt
from kdtalker.renderer.appearance import AppearanceFeatureExtractor
from kdtalker.renderer.backends import (
    BACKENDS,
    GRAPH_BACKENDS,
    GraphWarpDecode,
    check_graph_backend,
    resolve_backend,
)
from kdtalker.renderer.grid_sample import GRID_SAMPLE_MODES
from kdtalker.renderer.keypoints import headpose_to_degrees, transform_keypoints
from kdtalker.renderer.layers import channels_last_like, fold_all_batchnorms, to_channels_last, to_contiguous
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT
from kdtalker.renderer.motion_extractor import MotionExtractor
from kdtalker.renderer.spade import SPADEDecoder, SPADEResnetBlock
from kdtalker.renderer.stitching import apply_stitching, retarget_eye, retarget_lip
from kdtalker.renderer.warping import UpBlock3d, WarpingNetwork

MEMORY_FORMATS = ("auto", "contiguous", "channels_last")


def packaged_graph_opset() -> int:
    """The ONNX opset of the renderer's graphs, as the packaged renderer/liveportrait.yaml states it."""
    return int(OmegaConf.load(CONFIG_DIR / "renderer" / "liveportrait.yaml").graph_opset)


def _use_channels_last(memory_format: str, device: torch.device) -> bool:
    """auto: channels_last on AVX-512 CPUs (where it measured ~1.4x on the 3x3 convs); contiguous elsewhere: on an
    AVX2-only CPU it measured no faster, and on an H200 slower (warping + decoder, batch 16: float16 130 vs 160
    frames/s, float32 81 vs 92; README "Speed")."""
    if memory_format == "auto":
        return device.type == "cpu" and torch.cpu._is_avx512_supported()
    return memory_format == "channels_last"


def image_tensor(rgb: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> (1, 3, H, W) in [0, 1] on device/dtype; ImageError for any other shape."""
    rgb = torch.as_tensor(np.asarray(rgb))
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"the renderer needs an RGB image of shape (H, W, 3); got shape {tuple(rgb.shape)}")
    x = (rgb.to(torch.float32) / 255.0).clamp(0, 1)
    return x.permute(2, 0, 1)[None].to(device=device, dtype=dtype)


@dataclass(frozen=True)
class Source:
    """One source image encoded once: everything every frame reuses.

    info: keypoint_info (pitch/yaw/roll (1, 1) degrees, t (1, 3), exp, kp (1, 21, 3), scale (1, 1)); f_s the
    appearance volume (1, 32, 16, 64, 64); x_s the posed source keypoints (1, 21, 3); compressed: the dense-motion
    network's compression of f_s (source-only work of the warping module).
    """

    info: dict[str, torch.Tensor] | None
    f_s: torch.Tensor
    x_s: torch.Tensor
    compressed: torch.Tensor


class LivePortraitRenderer(nn.Module):
    """F, M, W, G and the stitching/retargeting MLPs behind a small inference API (all under inference_mode)."""

    layout = LIVEPORTRAIT_LAYOUT  # the motion this renderer's keypoints are composed from

    def __init__(
        self,
        appearance: AppearanceFeatureExtractor,
        motion: MotionExtractor,
        warping: WarpingNetwork,
        decoder: SPADEDecoder,
        retargeting: nn.ModuleDict | None = None,
        chunk_size: int = 4,
        fold_batchnorm: bool = True,
        fuse_ops: bool = True,
        memory_format: str = "auto",
        compile_modules: bool = False,
        grid_sample: str = "auto",
        backend: str = "auto",
        graph: str | os.PathLike | None = None,
        graph_opset: int | None = None,
        graph_cache: str | os.PathLike | None = None,
    ):
        super().__init__()
        self.appearance = appearance
        self.motion = motion
        self.warping = warping
        self.decoder = decoder
        self.retargeting = retargeting
        self.chunk_size = max(1, int(chunk_size))
        self.eval().requires_grad_(False)
        if fold_batchnorm:
            fold_all_batchnorms(self)
        for module in self.modules():
            if isinstance(module, (SPADEResnetBlock, UpBlock3d)):
                module.fused = fuse_ops
        if memory_format not in MEMORY_FORMATS:
            raise ConfigError(f"renderer.memory_format={memory_format!r} is not one of {MEMORY_FORMATS}")
        self.memory_format = memory_format
        if grid_sample not in GRID_SAMPLE_MODES:
            raise ConfigError(f"renderer.grid_sample={grid_sample!r} is not one of {GRID_SAMPLE_MODES}")
        self.grid_sample = grid_sample
        for module in (self.warping, self.warping.dense_motion_network):
            module.grid_sample = grid_sample  # resolved per call on the volume's device: .to("mps") needs no rebuild
        if backend not in BACKENDS:
            raise ConfigError(f"renderer.backend={backend!r} is not one of {BACKENDS}")
        self.backend_setting = backend  # auto is resolved on the device and dtype, in _settle
        self.backend = backend
        self.graph = graph
        # None: the packaged config's opset (renderer/liveportrait.yaml, its one source)
        self.graph_opset = int(graph_opset if graph_opset is not None else packaged_graph_opset())
        self.graph_cache = graph_cache  # None: export in every process
        self.graph_settings = {"fold_batchnorm": fold_batchnorm, "fuse_ops": fuse_ops, "grid_sample": grid_sample}
        self.channels_last = False
        # backend=inductor is compile_modules under its backend name (torch.compile's default CPU/GPU compiler)
        self.compile_modules = compile_modules or backend == "inductor"
        self._settle()
        self._compiled: dict = {}  # (device, dtype, batch) -> the compiled warp+decode of that static shape
        self._graph: GraphWarpDecode | None = None  # backend onnxruntime / openvino: built on the first render

    def _apply(self, fn, recurse: bool = True):
        # .to()/.half()/.cuda() land here. The tiny stitching MLPs only follow the device: they stay float32 (their
        # inputs are keypoints, which are float32 whatever the renderer's dtype); the layout follows the device.
        retargeting = self._modules.pop("retargeting", None)
        try:
            super()._apply(fn, recurse)
        finally:
            self._modules["retargeting"] = retargeting
        if retargeting is not None:
            retargeting.to(self.device)
        if hasattr(self, "memory_format"):
            self._settle()
        return self

    def _settle(self) -> None:
        """Warping + decoder in the memory format chosen for the device they live on; weight caches rebuilt."""
        want = _use_channels_last(self.memory_format, self.device)
        if want != self.channels_last:
            convert = to_channels_last if want else to_contiguous
            convert(self.warping)
            convert(self.decoder)
            self.channels_last = want
        # compile=true asks for the compiled PyTorch modules: auto then stays torch
        cached = (self.graph is not None or self.graph_cache is not None) and not self.compile_modules
        self.backend = resolve_backend(self.backend_setting, self.device, self.dtype, cached)
        if self.backend in GRAPH_BACKENDS:
            check_graph_backend(self.backend, self.device, self.dtype)
        self.prepare()
        self._compiled = {}
        self._graph = None

    def prepare(self) -> None:
        """Build every lazy weight cache of warping + decoder now, so that forward only reads them (a trace, an
        export or a compile must not record the caches being built)."""
        for module in self.warping.modules():
            if isinstance(module, UpBlock3d):
                module.prepare()
        self.decoder.prepare()

    @classmethod
    def from_checkpoints(
        cls,
        liveportrait_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        configs: Mapping[str, Mapping] | None = None,
        stitching: bool = True,
        chunk_size: int = 4,
        fold_batchnorm: bool = True,
        fuse_ops: bool = True,
        memory_format: str = "auto",
        compile_modules: bool = False,
        grid_sample: str = "auto",
        backend: str = "auto",
        graph: str | os.PathLike | None = None,
        graph_opset: int | None = None,
        graph_cache: str | os.PathLike | None = None,
    ) -> "LivePortraitRenderer":
        """Load the official files under `liveportrait_dir` (base_models/*.pth, retargeting_models/*.pth)."""
        device, dtype = resolve_device(device), resolve_dtype(dtype)
        configs = configs or {}
        files = ckpt.liveportrait_files(liveportrait_dir)
        # loaded and BatchNorm-folded in float32, then cast: folding in half precision would round twice
        full = torch.float32
        renderer = cls(
            ckpt.load_appearance_feature_extractor(
                files["appearance_feature_extractor"], device, full, configs.get("appearance_feature_extractor")
            ),
            ckpt.load_motion_extractor(files["motion_extractor"], device, full, configs.get("motion_extractor")),
            ckpt.load_warping_module(files["warping_module"], device, full, configs.get("warping_module")),
            ckpt.load_spade_generator(files["spade_generator"], device, full, configs.get("spade_generator")),
            ckpt.load_stitching_retargeting(
                files["stitching_retargeting_module"], device, full, configs.get("stitching_retargeting_module")
            )
            if stitching
            else None,
            chunk_size=chunk_size,
            fold_batchnorm=fold_batchnorm,
            fuse_ops=fuse_ops,
            memory_format=memory_format,
            compile_modules=compile_modules,
            grid_sample=grid_sample,
            backend=backend,
            graph=graph,
            graph_opset=graph_opset,
            graph_cache=graph_cache,
        )
        return renderer.to(dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.decoder.fc.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.fc.weight.dtype

    @property
    def frame_scale(self) -> int:
        """Rendered frame size over the source crop's: the SPADE decoder's upscale (2: 256 px crop -> 512 px frames)."""
        return self.decoder.upscale

    def prepare_image(self, rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB (H, W, 3) (the 256x256 crop) -> (1, 3, H, W) in [0, 1] on the renderer's device/dtype."""
        return image_tensor(rgb, self.device, self.dtype)

    @torch.inference_mode()
    def appearance_features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) in [0, 1] -> f_s (B, 32, 16, 64, 64)."""
        return self.appearance(image.to(self.device, self.dtype))

    @torch.inference_mode()
    def keypoint_info(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, 256, 256) -> dict(pitch, yaw, roll (B, 1) degrees, t (B, 3), exp, kp (B, 21, 3), scale (B, 1)).

        Keypoint math runs in float32 whatever the renderer's dtype (as the official wrapper casts M's outputs).
        """
        out = {k: v.float() for k, v in self.motion(image.to(self.device, self.dtype)).items()}
        b = image.shape[0]
        info = {name: headpose_to_degrees(out[name])[:, None] for name in ("pitch", "yaw", "roll")}
        info.update(t=out["t"], exp=out["exp"].reshape(b, -1, 3), scale=out["scale"], kp=out["kp"].reshape(b, -1, 3))
        return info

    @torch.inference_mode()
    def transform(self, info: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """keypoint_info dict -> posed keypoints x = s * (kp R + exp) + [t_x, t_y, 0], (B, 21, 3)."""
        return transform_keypoints(
            info["kp"], info["pitch"], info["yaw"], info["roll"], info["exp"], info["scale"], info["t"]
        )

    @torch.inference_mode()
    def stitch(self, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        """Stitching MLP correction of driving kp (B, 21, 3); unchanged when no stitching module is loaded."""
        net = self.retargeting["stitching"] if self.retargeting is not None else None
        x_s, x_d = x_s.to(self.device, torch.float32), x_d.to(self.device, torch.float32)
        return apply_stitching(x_s.expand_as(x_d), x_d, net)

    @torch.inference_mode()
    def retarget_eye(self, x_s: torch.Tensor, eye_ratio: torch.Tensor) -> torch.Tensor:
        """kp (B, 21, 3), eye ratios (B, 3) -> delta (B, 21, 3) to add to the driving keypoints."""
        return retarget_eye(x_s.float(), eye_ratio.float(), self.retargeting["eye"])

    @torch.inference_mode()
    def retarget_lip(self, x_s: torch.Tensor, lip_ratio: torch.Tensor) -> torch.Tensor:
        """kp (B, 21, 3), lip ratios (B, 2) -> delta (B, 21, 3) to add to the driving keypoints."""
        return retarget_lip(x_s.float(), lip_ratio.float(), self.retargeting["lip"])

    @torch.inference_mode()
    def warp_decode(self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> dict[str, torch.Tensor]:
        """Warp + decode: dict(out (B, 3, 512, 512), occlusion_map (B, 1, 64, 64), deformation (B, 16, 64, 64, 3))."""
        warped = self.warping(f_s.to(self.dtype), kp_driving=x_d.float(), kp_source=x_s.float())
        warped["out"] = self.decoder(warped["out"])
        return warped

    @torch.inference_mode()
    def encode_source(self, image: np.ndarray | torch.Tensor) -> Source:
        """The source crop, uint8 RGB (256, 256, 3) or (1, 3, 256, 256) in [0, 1] -> Source (all source-only work)."""
        image = self.prepare_image(image) if isinstance(image, np.ndarray) or image.ndim == 3 else image
        info = self.keypoint_info(image)
        return self.source(self.appearance_features(image), self.transform(info), info)

    @torch.inference_mode()
    def source(self, f_s: torch.Tensor, x_s: torch.Tensor, info: dict[str, torch.Tensor] | None = None) -> Source:
        """A Source from its appearance volume f_s (1, 32, 16, 64, 64) and keypoints x_s (1, 21, 3)."""
        f_s = f_s.to(self.device, self.dtype)
        if self.channels_last:
            f_s = channels_last_like(f_s)
        compressed = self.warping.dense_motion_network.compress_source(f_s)
        return Source(info, f_s, x_s.to(self.device), compressed)  # x_s keeps float32 keypoint math

    @torch.inference_mode()
    def render(self, source: Source, x_d: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Source + driving keypoints x_d (B, 21, 3) -> frames (B, 3, 512, 512) in [0, 1], the renderer's dtype.

        The source-only work was done once, in `source`; frames go through W and G in chunks of `chunk_size`
        (default: the renderer's own) so memory does not grow with B. Keypoints stay float32 (the warping module
        does its keypoint math in float32 and casts only the sampling grid). On a GPU, and when compiled, a short
        last chunk is padded to the chunk size (the padding dropped after): one shape per run, so cuDNN's
        autotuning (and a compile) happens once, not again for every clip's tail length (~4-6 s each on an H200).
        """
        chunk = max(1, int(chunk_size or self.chunk_size))
        x_d = x_d.to(self.device, torch.float32)
        x_s = source.x_s.to(self.device, torch.float32)
        pad = self.compile_modules or self.device.type == "cuda"
        frames = []
        for start in range(0, x_d.shape[0], chunk):
            x_chunk = x_d[start : start + chunk]
            n = x_chunk.shape[0]
            if pad and n < chunk:
                x_chunk = torch.cat([x_chunk, x_chunk[-1:].expand(chunk - n, -1, -1)])
            if self.backend in GRAPH_BACKENDS:
                out = self._graph_warp_decode(source, x_s, x_chunk)
            elif self.compile_modules:
                out = self._compiled_warp_decode(source, x_s, x_chunk)
            else:
                out = self._warp_decode(source.f_s, x_s, x_chunk, source.compressed)
            frames.append(out[:n])
        return torch.cat(frames)

    def _warp_decode(
        self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor, compressed: torch.Tensor
    ) -> torch.Tensor:
        """One chunk: f_s (1, 32, 16, 64, 64), keypoints (B, 21, 3) float32 -> frames (B, 3, 512, 512)."""
        warped = self.warping(f_s, x_d, x_s, compressed=compressed)["out"]
        return self.decoder(channels_last_like(warped) if self.channels_last else warped)

    def _graph_warp_decode(self, source: Source, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        """`_warp_decode` as an exported graph in onnxruntime or OpenVINO (`graph`, or the graph cache's, or exported
        on the first call)."""
        if self._graph is None:
            if self.graph is not None:
                self._graph = GraphWarpDecode.load(self.backend, self.graph)
            else:
                self._graph = GraphWarpDecode.build(
                    self,
                    self.backend,
                    self.graph_opset,
                    self.graph_cache,
                    self.graph_settings,
                    source.f_s,
                    source.compressed,
                    x_s,
                    x_d,
                )
        return self._graph(source.f_s, source.compressed, x_s, x_d)

    def _compiled_warp_decode(self, source: Source, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        """`_warp_decode` through torch.compile: one graph for warping + decoder, compiled once per batch size.

        The weight caches (folded / fused / phase kernels, spectral norms) are built by an eager call before
        compiling, so the compiled graph only reads them (`render` pads a short chunk, so a run compiles one
        shape); on CUDA the graph is replayed as a CUDA graph ("reduce-overhead"), a step boundary is marked
        before each call, and the output is copied out of the graph's memory before the next replay overwrites it.
        """
        key = (self.device, self.dtype, x_d.shape[0])
        cuda = self.device.type == "cuda"
        if key not in self._compiled:
            self._warp_decode(source.f_s, x_s, x_d[:1], source.compressed)  # builds every lazy weight cache
            mode = "reduce-overhead" if cuda else "default"
            self._compiled[key] = torch.compile(self._warp_decode, dynamic=False, mode=mode)
        if cuda:
            torch.compiler.cudagraph_mark_step_begin()
        out = self._compiled[key](source.f_s, x_s, x_d, source.compressed)
        return out.clone() if cuda else out
