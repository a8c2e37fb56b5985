"""KDTalker inference: one portrait + one speech recording -> a talking-head mp4 with the speech as its sound.

    image --crop 256--> renderer.encode_source: Source(info, f_s, x_s)     wav --> Wav2Lip features (T, 512)
                                \\                                                   /
                                 DDIM over 64-frame windows (normalised motion (T, 70))
                                 -> denormalise -> Kalman smoothing -> head-motion scale
                                 -> driving keypoints (absolute | relative) [-> stitching]
                                 -> render in batches -> [paste back] -> ffmpeg (H.264 + AAC), streamed

Memory is flat in the audio length: only the (T, 70) motion and the (T, 21, 3) keypoints exist for the whole
clip; frames are rendered `batch_size` at a time and handed to ffmpeg as they come.
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
import time
import types
import typing
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import yaml
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from kdtalker.audio import audio_features, load_audio, num_video_frames
from kdtalker.audio.checkpoint import load_audio_encoder
from kdtalker.config import describe_type
from kdtalker.device import check_dtype, fastest_dtype, resolve_device, resolve_dtype
from kdtalker.diffusion import (
    MOTION_DIM,
    REGION_CHANNELS,
    DDIMScheduler,
    Denoiser,
    Guidance,
    MotionNorm,
    OneStepSampler,
    pack_motion,
    region_mask,
)
from kdtalker.diffusion.guidance import check_signals, leading_signal
from kdtalker.diffusion.motion import POSE
from kdtalker.diffusion.multisignal import SIGNAL_REGIONS
from kdtalker.diffusion.sampling import motion_windows
from kdtalker.diffusion.smoothing import StreamingSmoother
from kdtalker.errors import ConfigError, ImageError, KDTalkerError, VideoError
from kdtalker.fileio import atomic_path, check_not_input, check_output_path
from kdtalker.media import iter_video, video_duration
from kdtalker.pipeline.compose import driving_keypoints
from kdtalker.pipeline.control import (
    Control,
    fill_missing,
    load_pose_file,
    mix_motion,
    ping_pong,
    relative_video_motion,
)
from kdtalker.pipeline.face import FaceCrop, crop_face
from kdtalker.pipeline.face_onnx import crop_face_onnx
from kdtalker.pipeline.image import load_image
from kdtalker.pipeline.paste import PasteBack
from kdtalker.pipeline.prefetch import map_ahead, prefetch
from kdtalker.pipeline.progress import RenderingProgress
from kdtalker.pipeline.video import VideoWriter
from kdtalker.pipeline.weights import NORM_FILE, check_checkpoint_dir, crop_model_files
from kdtalker.renderer import LivePortraitRenderer, Source

MOTION_MODES = ("absolute", "relative")
CROP_METHODS = ("dlib", "insightface")
SAMPLE_RATE = 16000
MODEL_CONFIG_FILE = "model.yaml"  # an exported run's model config (scripts/export_checkpoint.py) in checkpoint_dir


@dataclass
class Controls:
    """What a user may change per run; every default is the official behaviour."""

    seed: int = 0
    steps: int = 50  # DDIM steps
    smoothing: float = 1.0  # Kalman smoothing strength: 1 = official (observation cov 0.001), 0 = off, > 1 smoother
    head_motion_scale: float = 1.0  # scales the predicted pose's deviation from the source pose; 0 = still head
    motion_mode: str = "absolute"  # official default; "relative" adds the motion's deltas to the source pose
    stitching: bool = False  # LivePortrait stitching of x_d (not in the official generate path)
    paste_back: bool = False  # put the animated crop back into the full source image
    batch_size: int | None = None  # frames rendered per batch; None = the device's fastest (default_batch_size)
    fps: float = 25.0
    crop_method: str = "dlib"
    crop_scale: float = 1.0  # > 1 includes more around the face (1 = the method's own crop)
    face_index: int = 0  # 0 = largest face, 1 = second largest, ...
    crf: int = 18  # H.264 quality (lower = better, bigger)
    control: Control = field(default_factory=Control)  # which signal drives which region (control.py)
    signals: str = "audio"  # audio | motion | both: the inputs of a multi-signal model (model=kdtalker_multisignal)
    guidance: Guidance = field(default_factory=Guidance)  # classifier-free guidance scales; 1 = none

    def validate(self) -> "Controls":
        """ConfigError for a value of the wrong type or out of range; returns self."""
        for name, kind in typing.get_type_hints(Controls).items():
            value = getattr(self, name)
            if not _is_of_kind(value, kind):
                raise ConfigError(f"{name}={value!r} is not valid: {name} takes {describe_type(Controls, name)}")
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.smoothing >= 0, f"smoothing must be >= 0, got {self.smoothing}"),
            (self.head_motion_scale >= 0, f"head_motion_scale must be >= 0, got {self.head_motion_scale}"),
            (self.motion_mode in MOTION_MODES, f"motion_mode must be one of {MOTION_MODES}, got {self.motion_mode!r}"),
            (self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.fps > 0, f"fps must be positive, got {self.fps}"),
            (self.crop_method in CROP_METHODS, f"crop must be one of {CROP_METHODS}, got {self.crop_method!r}"),
            (self.crop_scale > 0, f"crop.scale must be positive, got {self.crop_scale}"),
            (self.face_index >= 0, f"crop.face_index must be >= 0, got {self.face_index}"),
            (0 <= self.crf <= 51, f"crf must be in 0..51, got {self.crf}"),
            (
                self.signals in SIGNAL_REGIONS,
                f"signals must be one of {tuple(SIGNAL_REGIONS)}, got {self.signals!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.control.validate()
        self.guidance.validate()
        return self

    @property
    def uses_audio(self) -> bool:
        """Whether the sampled motion follows the audio (the official path does)."""
        return self.signals != "motion"

    @property
    def uses_motion(self) -> bool:
        """Whether a driving motion goes into the multi-signal model."""
        return self.signals != "audio"


def _is_of_kind(value: Any, kind: Any) -> bool:
    """isinstance for a control: bool is no int (Python says it is), a whole float is no int; an int is a float."""
    if isinstance(kind, types.UnionType):
        return any(_is_of_kind(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


@dataclass
class _Job:
    """One run's prepared inputs: controls, the encoded source, audio features (T, 512), the trimmed waveform."""

    controls: Controls
    source: Source
    features: torch.Tensor
    wav: np.ndarray
    num_frames: int
    paste: PasteBack | None
    width: int
    height: int
    given_motion: torch.Tensor | None = None  # (T, 70) from motion_file: rendered as it is
    video_motion: torch.Tensor | None = None  # (T, 70) the driving video's relative motion on the source
    pose_track: torch.Tensor | None = None  # (T, 6) a pose file's angles + translation
    source_video: Path | None = None  # dubbing: every frame of this video is its own source
    record: bool = False  # keep the rendered motion and keypoints (save_motion): copied to the host only then
    motion: list = field(default_factory=list)  # the rendered motion, piece by piece (for save_motion)
    x_d: list = field(default_factory=list)  # the driving keypoints, piece by piece

    def keep(self, motion: torch.Tensor, x_d: torch.Tensor) -> None:
        """Record a rendered piece, motion (n, 70) and x_d (n, 21, 3), on the host: only when save_motion asks."""
        if self.record:
            self.motion.append(motion.cpu())
            self.x_d.append(x_d.cpu())


@dataclass
class _Rendered:
    """A rendered batch on its way out: uint8 frames (B, 512, 512, 3) and per-frame flags (B, 2) (NaN/inf, one flat
    colour) on the host; on a GPU they arrive by a non-blocking copy into pinned memory that `copied` marks done."""

    frames: torch.Tensor
    flags: torch.Tensor
    first: int
    paste: PasteBack | None
    copied: Any = None  # torch.cuda.Event, or None when the tensors are already on the host


@dataclass
class Timings:
    """Seconds per stage of the last `generate` call (+ model loading); rendering and writing interleave."""

    load: float = 0.0
    crop: float = 0.0
    audio: float = 0.0
    sampling: float = 0.0
    rendering: float = 0.0
    writing: float = 0.0
    wall: float = 0.0  # first input read to last frame out (stages may overlap; each stage counts its busy time)
    frames: int = 0


class TalkingHeadPipeline:
    """The official KDTalker inference on our modules; build with `from_config` or from a checkpoint folder."""

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike = "checkpoints",
        device: str = "auto",
        dtype: str = "float32",
        controls: Controls | None = None,
        kalman_transition_cov: float = 0.05,
        kalman_observation_cov: float = 0.001,
        predictor_path: str | None = None,
        scheduler: Any = None,
        model_kwargs: Mapping[str, Any] | None = None,
        renderer_kwargs: Mapping[str, Any] | None = None,
        audio_batch_size: int = 256,
        model_class: type = Denoiser,
        renderer_factory: Callable[[], Any] | None = None,
        audio_checkpoint: str = "wav2lip.pth",
        overlap: bool | None = None,
    ):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = resolve_device(device)
        self.dtype = check_dtype(
            self.device, fastest_dtype(self.device) if dtype == "fastest" else resolve_dtype(dtype)
        )
        self.controls = (controls or Controls()).validate()
        self.kalman_transition_cov = kalman_transition_cov
        self.kalman_observation_cov = kalman_observation_cov
        self.predictor_path = predictor_path
        self.scheduler = scheduler
        self.model_kwargs = dict(model_kwargs or {})
        self.audio_batch_size = audio_batch_size
        self.model_class = model_class
        # from_config: the renderer group's _target_ with its keys; otherwise the official files under checkpoint_dir
        self.renderer_factory = renderer_factory or functools.partial(
            LivePortraitRenderer.from_checkpoints,
            self.checkpoint_dir / "liveportrait",
            device=self.device,
            dtype=self.dtype,
            **(renderer_kwargs or {}),
        )
        self.audio_checkpoint = audio_checkpoint
        # sample window k+1 while window k renders: on by default where the two run side by side (a GPU)
        self.overlap = self.device.type == "cuda" if overlap is None else bool(overlap)
        # Fail before any work when a weight file is missing, truncated or the wrong one.
        self.weight_files = check_checkpoint_dir(self.checkpoint_dir)
        if self.controls.crop_method == "insightface":
            crop_model_files(self.checkpoint_dir)
        self._models: dict[str, Any] | None = None
        self.timings = Timings()
        self.notes: list[str] = []  # what the last run wants the user to know (one line each)
        self._config_notes: list[str] = []  # about the configuration: handed to the first run's notes only

    @classmethod
    def from_config(cls, cfg: Any) -> "TalkingHeadPipeline":
        """Build from the inference config (configs/inference.yaml and its groups); every value comes from there.

        renderer: its `_target_` with all its keys (built when the models load); model: its `_target_` class
        loaded from KDTalker.pth with the other keys; diffusion: the scheduler; audio: checkpoint file and batch.
        A `checkpoint_dir/model.yaml` (scripts/export_checkpoint.py) replaces the model group (and the diffusion
        group when it has that node): an exported run is rebuilt with its own architecture.
        """
        cfg = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(cfg)
        cfg, note = _with_exported_model(cfg)
        crop = cfg.crop
        nested = ("control", "guidance")
        controls = Controls(
            **{f.name: cfg[f.name] for f in fields(Controls) if f.name in cfg and f.name not in nested},
            control=Control.of(OmegaConf.to_container(cfg.control)),
            guidance=_guidance(OmegaConf.to_container(cfg.guidance)),
            crop_method=crop.method,
            crop_scale=crop.scale,
            face_index=crop.face_index,
        )
        if int(cfg.audio.sample_rate) != SAMPLE_RATE:
            raise ConfigError(f"audio.sample_rate={cfg.audio.sample_rate}: the Wav2Lip mel is defined at {SAMPLE_RATE}")
        model_kwargs = OmegaConf.to_container(cfg.model, resolve=True)
        try:
            model_class = get_class(model_kwargs.pop("_target_"))
            renderer_factory = instantiate(cfg.renderer, _partial_=True)
            scheduler = instantiate(cfg.diffusion)
        except Exception as exc:  # noqa: BLE001 - instantiate wraps constructor errors in its own types
            detail = next((s for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
            raise ConfigError(f"the inference config could not be built: {detail}") from None
        pipeline = cls(
            checkpoint_dir=cfg.checkpoint_dir,
            device=cfg.device,
            dtype=cfg.dtype,
            controls=controls,
            kalman_transition_cov=cfg.kalman.transition_cov,
            kalman_observation_cov=cfg.kalman.observation_cov,
            predictor_path=crop.predictor_path,
            scheduler=scheduler,
            model_class=model_class,
            model_kwargs=model_kwargs,
            renderer_factory=renderer_factory,
            audio_checkpoint=cfg.audio.checkpoint,
            audio_batch_size=cfg.audio.batch_size,
            overlap=cfg.overlap,
        )
        if note is not None:
            pipeline._config_notes.append(note)
        return pipeline

    def load(self) -> dict[str, Any]:
        """Load every model once: renderer, audio encoder, denoiser, scheduler, normalisation statistics."""
        if self._models is not None:
            return self._models
        start = time.perf_counter()
        root = self.checkpoint_dir
        if self.device.type == "cuda":
            # one render batch shape per run: let cuDNN pick each convolution's fastest algorithm once (float32
            # convolutions already use TF32 by PyTorch's default; the denoiser's matmuls stay full float32)
            torch.backends.cudnn.benchmark = True
        self._models = {
            "renderer": self.renderer_factory(device=self.device, dtype=self.dtype),  # as resolved here
            "audio": load_audio_encoder(root / self.audio_checkpoint, device=self.device),
            "denoiser": self.model_class.from_pretrained(root / "KDTalker.pth", self.device, **self.model_kwargs),
            "scheduler": self.scheduler if self.scheduler is not None else DDIMScheduler(),
            "norm": MotionNorm.load(root / NORM_FILE),
        }
        _check_sampler(self._models["denoiser"], self._models["scheduler"], root / "KDTalker.pth")
        self.timings.load = time.perf_counter() - start
        return self._models

    def generate(
        self,
        source_image: str | os.PathLike | None,
        driven_audio: str | os.PathLike | None,
        output: str | os.PathLike,
        *,
        save_motion: str | os.PathLike | None = None,
        motion_file: str | os.PathLike | None = None,
        driving_video: str | os.PathLike | None = None,
        pose_file: str | os.PathLike | None = None,
        source_video: str | os.PathLike | None = None,
        **controls: Any,
    ) -> Path:
        """Portrait + speech -> `output` mp4 (fps frames/s, 512x512 or the source size with paste_back, H.264 + AAC).

        save_motion: also write the rendered motion to this .npz (`save_motion_file`); motion_file: render the motion
        of such a file instead of sampling one (no audio model, no diffusion; driven_audio, if given, is the sound).
        driving_video / pose_file: signals for `control` (control.py: which region follows audio, video or file).
        source_video (instead of source_image): dubbing, every frame its own source, its lips following the audio.
        """
        ctl = self._controls(controls)
        output = Path(output)
        if output.suffix.lower() != ".mp4":
            raise VideoError(f"output {output} must be an .mp4 file")
        check_output_path(output, "the video")  # a folder, a read-only place or /proc fails now, not after rendering
        if save_motion is not None:
            save_motion = _npz_path(save_motion, "save_motion")
            check_output_path(save_motion, "the motion file")
        inputs = {"source_image": source_image, "driven_audio": driven_audio, "motion_file": motion_file}
        inputs.update(driving_video=driving_video, pose_file=pose_file, source_video=source_video)
        check_not_input(output, inputs, "output")
        if save_motion is not None:
            check_not_input(save_motion, inputs, "save_motion")
        job, batches = self._start(source_image, driven_audio, ctl, motion_file, driving_video, pose_file, source_video)
        job.record = save_motion is not None
        with atomic_path(output) as tmp:
            # the sound is the user's own recording (its rate and channels), cut to exactly the video's length
            duration = job.num_frames / ctl.fps
            writer = VideoWriter(
                tmp, job.width, job.height, ctl.fps, crf=ctl.crf, audio_file=driven_audio, duration=duration
            )
            try:
                for frames in batches:
                    with self._stage("writing"):
                        writer.write(frames)
                with self._stage("writing"):
                    writer.close()
                    if save_motion is not None:
                        save_motion_file(save_motion, job)
            except BaseException:
                writer.abort()
                raise
        self._finish_timings(job)
        return output

    def stream(
        self,
        source_image: str | os.PathLike | None,
        driven_audio: str | os.PathLike | None,
        *,
        motion_file: str | os.PathLike | None = None,
        driving_video: str | os.PathLike | None = None,
        pose_file: str | os.PathLike | None = None,
        source_video: str | os.PathLike | None = None,
        **controls: Any,
    ) -> Iterator[np.ndarray]:
        """Portrait + speech (or a motion file) -> uint8 RGB frames (H, W, 3), each yielded as soon as it is rendered.

        The same frames `generate` writes for the same controls; the first one comes after the first motion window
        has been sampled and one render batch drawn, not after the whole clip.
        """
        ctl = self._controls(controls)
        job, batches = self._start(source_image, driven_audio, ctl, motion_file, driving_video, pose_file, source_video)
        for frames in batches:
            yield from frames
        self._finish_timings(job)

    def _controls(self, controls: Mapping[str, Any]) -> Controls:
        known = {f.name for f in fields(Controls)}
        if set(controls) - known:
            raise ConfigError(f"unknown control(s) {sorted(set(controls) - known)}; known: {sorted(known)}")
        if "control" in controls:
            controls = {**controls, "control": Control.of(controls["control"])}
        if "guidance" in controls:
            controls = {**controls, "guidance": _guidance(controls["guidance"])}
        ctl = replace(self.controls, **controls).validate()
        return ctl if ctl.batch_size is not None else replace(ctl, batch_size=default_batch_size(self.device))

    def _start(
        self, source_image, driven_audio, ctl, motion_file, driving_video, pose_file, source_video
    ) -> tuple["_Job", Iterator[np.ndarray]]:
        """The prepared job and its frame batches: a portrait, or a source video to dub."""
        if (source_image is None) == (source_video is None):
            raise ConfigError("give one source: source_image=PATH or source_video=PATH (dubbing)")
        with self._memory_errors(ctl):
            job, batches = self._start_job(
                source_image, driven_audio, ctl, motion_file, driving_video, pose_file, source_video
            )
        return job, self._guarded(batches, ctl)

    def _guarded(self, batches: Iterator[np.ndarray], ctl: Controls) -> Iterator[np.ndarray]:
        with self._memory_errors(ctl):
            yield from batches

    @contextmanager
    def _memory_errors(self, ctl: Controls) -> Iterator[None]:
        """The device's out-of-memory error -> one KDTalkerError that says what to lower (no traceback)."""
        try:
            yield
        except torch.OutOfMemoryError:
            where = f"the GPU ({self.device})" if self.device.type == "cuda" else "this machine"
            half = " or dtype=float16" if self.device.type == "cuda" and self.dtype == torch.float32 else ""
            raise KDTalkerError(
                f"{where} ran out of memory rendering {ctl.batch_size} frame(s) at a time: lower batch_size "
                f"(e.g. batch_size={max(1, ctl.batch_size // 4)}){half}, or free memory other programs hold"
            ) from None

    def _start_job(
        self, source_image, driven_audio, ctl, motion_file, driving_video, pose_file, source_video
    ) -> tuple["_Job", Iterator[np.ndarray]]:
        if source_video is None:
            job = self._prepare(source_image, driven_audio, ctl, motion_file, driving_video, pose_file)
            return job, self._frame_batches(job)
        signals = (motion_file, driving_video, pose_file)
        if any(x is not None for x in signals) or not ctl.control.is_audio_only or ctl.uses_motion:
            raise ConfigError(
                "source_video keeps the video's own pose, eyes and expression and moves the lips with the audio: "
                "it takes no motion_file, driving_video, pose_file, control.* or signals"
            )
        if driven_audio is None:
            raise ConfigError("source_video needs driven_audio=PATH: the speech its lips will follow")
        job = self._prepare_dub(source_video, driven_audio, ctl)
        return job, self._dub_batches(job)

    def _prepare(
        self,
        source_image: str | os.PathLike,
        driven_audio: str | os.PathLike | None,
        ctl: Controls,
        motion_file: str | os.PathLike | None = None,
        driving_video: str | os.PathLike | None = None,
        pose_file: str | os.PathLike | None = None,
    ) -> "_Job":
        """Inputs checked and read, models loaded, the source encoded, audio features and control signals (once)."""
        self._begin_run()
        control = ctl.control
        # The cheap input checks come first: a wrong path fails at once, not after loading the models.
        given = load_motion_file(motion_file) if motion_file is not None else None
        _check_signals(ctl, driven_audio, driving_video, pose_file, given is not None)
        with self._stage("crop"):
            image = load_image(source_image)
            face = self.crop(image, ctl)
        wav, features, num_frames = None, None, None
        if driven_audio is not None:
            wav, num_frames = self._read_audio(driven_audio, ctl)
        if given is not None:
            num_frames = given.shape[0]
        models = self.load()
        check_signals(models["denoiser"], ctl.uses_audio, ctl.uses_motion, ctl.guidance)
        if ctl.uses_motion and not models["denoiser"].motion_branch_trained:
            raise ConfigError(
                f"signals={ctl.signals}: the multi-signal model's motion branch is untrained (its weights in "
                f"{self.checkpoint_dir / 'KDTalker.pth'} are missing or zero, as in the official file), so the "
                "driving video would change nothing; train it first (python train.py experiment=multisignal)"
            )
        with torch.inference_mode():
            with self._stage("crop"):
                source = models["renderer"].encode_source(face.image)
            raw_source = source_motion(source.info)
            video = None
            if driving_video is not None:
                with self._stage("crop"):
                    video = self.driving_motion(driving_video, ctl, limit=num_frames)
                num_frames = num_frames or video.shape[0]  # video-only: as long as the video
                video = relative_video_motion(video[torch.from_numpy(ping_pong(len(video), num_frames))], raw_source)
            pose = None
            if pose_file is not None:
                pose = load_pose_file(pose_file, num_frames, ctl.fps, raw_source)
            if given is None and control.uses("audio") and ctl.uses_audio:
                with self._stage("audio"):
                    features = audio_features(wav, models["audio"], fps=ctl.fps, batch_size=self.audio_batch_size)
        paste = PasteBack(image, face.matrix) if ctl.paste_back else None
        width, height = _output_size(image, ctl.paste_back)
        return _Job(
            ctl,
            source,
            features,
            wav,
            num_frames,
            paste,
            width,
            height,
            given_motion=given,
            video_motion=video,
            pose_track=pose,
        )

    def _prepare_dub(self, source_video: str | os.PathLike, driven_audio: str | os.PathLike, ctl: Controls) -> "_Job":
        """Dubbing: the audio's features and the motion sampled from the video's first frame as the source."""
        self._begin_run()
        wav, num_frames = self._read_audio(driven_audio, ctl)
        with self._stage("crop"):
            first_frame = next(iter_video(source_video, fps=ctl.fps, batch=1))[0]
            face = self.crop(first_frame, ctl)
        models = self.load()
        with torch.inference_mode():
            with self._stage("crop"):
                source = models["renderer"].encode_source(face.image)
            with self._stage("audio"):
                features = audio_features(wav, models["audio"], fps=ctl.fps, batch_size=self.audio_batch_size)
        width, height = _output_size(first_frame, ctl.paste_back)
        return _Job(ctl, source, features, wav, num_frames, None, width, height, source_video=Path(source_video))

    def _begin_run(self) -> None:
        """Fresh timings and notes for a run (model loading, done once, keeps its time)."""
        self.timings = Timings(load=self.timings.load)
        self.notes, self._config_notes = self._config_notes, []
        self._wall_start = time.perf_counter()

    def _read_audio(self, driven_audio: str | os.PathLike, ctl: Controls) -> tuple[np.ndarray, int]:
        """The speech as the model hears it (16 kHz mono), cut to the sound of exactly its video frames -> (wav, T)."""
        with self._stage("audio"):
            wav = load_audio(driven_audio, SAMPLE_RATE, fps=ctl.fps)
            num_frames = num_video_frames(len(wav), SAMPLE_RATE, ctl.fps)
            return wav[: int(num_frames * SAMPLE_RATE / ctl.fps)], num_frames

    def _source_frames(self, path: Path, fps: float, count: int) -> Iterator[np.ndarray]:
        """`count` frames of the source video at `fps`, decoded as they are used; a shorter video plays back and
        forth (its frames are then kept in memory, the only case that keeps them)."""
        short = int(video_duration(path) * fps) < count + 1
        kept: list[np.ndarray] = []
        given = 0
        for frames in iter_video(path, fps=fps):
            for frame in frames:
                if given == count:
                    return
                if short:
                    kept.append(frame)
                given += 1
                yield frame
        if given < count:
            if not kept:
                raise VideoError(f"source_video {path} ended early; it is shorter than its header says")
            order = ping_pong(len(kept), count)
            for index in order[given:]:
                yield kept[index]

    @torch.inference_mode()
    def _dub_batches(self, job: "_Job") -> Iterator[np.ndarray]:
        """Every output frame from its own source frame: the frame's own pose, eyes and expression, and its lips moved
        by the sampled lip motion relative to the sampled sequence's first frame."""
        ctl = job.controls
        renderer = self.load()["renderer"]
        lips = torch.tensor(REGION_CHANNELS["lips"], dtype=torch.long)
        sampled_0 = None
        frames = self._source_frames(job.source_video, ctl.fps, job.num_frames)
        index = 0
        progress = RenderingProgress(job.num_frames)
        try:
            for piece in self.motion_pieces(job.source.info, job.features, ctl):
                sampled_0 = piece[:1] if sampled_0 is None else sampled_0
                for row in piece:
                    frame = next(frames)
                    with self._stage("crop"):
                        try:
                            face = self.crop(frame, ctl)
                        except ImageError as exc:
                            raise ImageError(f"frame {index} of source_video {job.source_video}: {exc}") from None
                        source = renderer.encode_source(face.image)
                    own = source_motion(source.info)
                    motion = own.clone()
                    motion[lips] = own[lips] + (row[lips].to(own) - sampled_0[0, lips].to(own))
                    with self._stage("sampling"):
                        x_d = driving_keypoints(source.info, motion[None], mode="absolute")
                    job.keep(motion[None], x_d)
                    paste = PasteBack(frame, face.matrix) if ctl.paste_back else None
                    out = self._finish_batch(self._render_batch(renderer, source, x_d, index, job, paste), job)
                    index += 1
                    progress.update(1)
                    yield out
        finally:
            progress.close()
        self.timings.frames = index

    def driving_motion(self, path: str | os.PathLike, ctl: Controls, limit: int | None = None) -> torch.Tensor:
        """A driving video -> its raw motion per frame (V, 70) at ctl.fps (the first `limit` frames): each frame
        cropped like the source, LivePortrait's motion extractor batched; faceless frames take the nearest face's."""
        renderer = self.load()["renderer"]
        crops, found, rows = [], [], []

        def flush() -> None:
            if crops:
                images = torch.cat([renderer.prepare_image(c) for c in crops])
                rows.append(motions_of(renderer.keypoint_info(images)))  # stays on the renderer's device
                crops.clear()

        for frames in iter_video(path, fps=ctl.fps):
            for frame in frames:
                if limit is not None and len(found) >= limit:
                    break
                try:
                    crops.append(self.crop(frame, ctl).image)
                    found.append(True)
                except ImageError:
                    crops.append(np.zeros((256, 256, 3), np.uint8))  # placeholder; its motion is replaced below
                    found.append(False)
                if len(crops) == 16:
                    flush()
            if limit is not None and len(found) >= limit:
                break
        flush()
        found = np.asarray(found)
        motion = fill_missing(torch.cat(rows), found)
        if not found.all():
            self.notes.append(
                f"{int((~found).sum())} of {len(found)} driving-video frames show no face; "
                "they hold the nearest frame's motion"
            )
        return motion

    def crop(self, image: np.ndarray, ctl: Controls | None = None) -> FaceCrop:
        """(H, W, 3) uint8 RGB -> the 256x256 source crop by the configured method."""
        ctl = ctl or self.controls
        if ctl.crop_method == "insightface":
            return crop_face_onnx(
                image,
                crop_model_files(self.checkpoint_dir),
                face_index=ctl.face_index,
                scale=ctl.crop_scale,
                device=self.device,
            )
        return crop_face(image, face_index=ctl.face_index, scale=ctl.crop_scale, predictor_path=self.predictor_path)

    def sample(
        self,
        source_info: dict[str, torch.Tensor],
        features: torch.Tensor | None,
        ctl: Controls,
        driving: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Source keypoint info + audio features (T, 512) -> denormalised, smoothed motion (T, 70) float32.

        driving: the raw driving motion (T, 70) on the source (relative_video_motion) for ctl.signals=motion|both;
        features None with signals=motion."""
        return torch.cat(list(self.motion_pieces(source_info, features, ctl, driving)))

    def motion_pieces(
        self,
        source_info: dict[str, torch.Tensor],
        features: torch.Tensor | None,
        ctl: Controls,
        driving: torch.Tensor | None = None,
    ) -> Iterator[torch.Tensor]:
        """As `sample`, in pieces (n, 70) that are final as soon as they come (window by window, smoothing lag)."""
        models = self.load()
        norm = models["norm"]
        if ctl.uses_motion and driving is None:
            raise ConfigError(f"signals={ctl.signals} needs the driving motion (driving_video=PATH)")
        audio = features.float()[None] if ctl.uses_audio else None
        motion = norm.normalize(driving.float())[None] if ctl.uses_motion else None
        lead = leading_signal(audio, motion)
        num_frames = lead.shape[1]
        raw = source_motion(source_info).to(lead.device)  # (70,) unnormalised
        ori = norm.canonical_token(source_info["kp"].reshape(63).float().to(raw.device))
        generator = torch.Generator(device=models["denoiser"].input_projection.weight.device).manual_seed(int(ctl.seed))
        windows = motion_windows(
            models["denoiser"],
            models["scheduler"],
            audio,
            norm.normalize(raw)[None],
            ori[None],
            steps=ctl.steps,
            generator=generator,
            driving=motion,
            regions=region_mask(SIGNAL_REGIONS[ctl.signals])[None] if motion is not None else None,
            guidance=ctl.guidance,
        )
        # Official: pitch, yaw, roll, t and exp Kalman-smoothed, the scale left as sampled. The strength scales
        # the observation noise: more noise = trust the samples less = smoother.
        smoother = StreamingSmoother(
            self.kalman_transition_cov, self.kalman_observation_cov * ctl.smoothing, enabled=ctl.smoothing > 0
        )
        done = 0
        while True:
            with self._stage("sampling"):
                piece = next(windows, None)
                if piece is None:
                    rows = smoother.finish()
                else:
                    x0 = piece[1][0, : num_frames - done]
                    done += x0.shape[0]
                    motion = norm.denormalize(x0).float()
                    if not torch.isfinite(motion).all():
                        raise self._broken_motion("sampled motion")
                    rows = smoother.push(motion.cpu().numpy())
                rows = torch.from_numpy(rows).to(raw.device)
                if ctl.head_motion_scale != 1.0:
                    # Pose = angles and translation; the expression is left as predicted.
                    rows[:, POSE] = raw[POSE] + ctl.head_motion_scale * (rows[:, POSE] - raw[POSE])
            if rows.shape[0]:
                yield rows
            if piece is None:
                break
        if done != num_frames:
            raise KDTalkerError(f"the sampler returned {done} frames for {num_frames} audio frames")

    def controlled_pieces(self, job: "_Job") -> Iterator[torch.Tensor]:
        """The motion to render, in pieces: the sampled audio motion with each region from its control signal."""
        control, source = job.controls.control, job.source
        driving = job.video_motion if job.controls.uses_motion else None
        if control.is_audio_only:
            yield from self.motion_pieces(source.info, job.features, job.controls, driving)
            return
        raw_source = source_motion(source.info)
        if control.uses("audio"):
            audio_pieces = self.motion_pieces(source.info, job.features, job.controls, driving)
        else:
            audio_pieces = iter([None])
        done = 0
        for audio in audio_pieces:
            n = job.num_frames - done if audio is None else audio.shape[0]
            rows = slice(done, done + n)
            video = None if job.video_motion is None else job.video_motion[rows]
            pose = None if job.pose_track is None else job.pose_track[rows]
            yield mix_motion(control, raw_source, audio=audio, video=video, pose=pose)
            done += n

    def driving_keypoints(
        self,
        source_info: dict[str, torch.Tensor],
        motion: torch.Tensor,
        ctl: Controls,
        first: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Motion (T, 70) -> driving keypoints x_d (T, 21, 3), official absolute or relative composition.

        first: the clip's frame 0 (1, 70) when `motion` is a later piece (relative mode measures from it)."""
        return driving_keypoints(source_info, motion, mode=ctl.motion_mode, first=first)

    @torch.inference_mode()  # on a generator: only while it runs, not in the caller's code between frames
    def _frame_batches(self, job: "_Job") -> Iterator[np.ndarray]:
        """Rendered uint8 frames (B, H, W, 3) in order, batches of batch_size counted from frame 0 (so the batch
        split, and with it every frame, does not depend on how the motion arrives).

        With overlap (a GPU) the stages run side by side: motion windows are sampled in a thread of their own (on
        their own CUDA stream); this thread renders batch k + 1 and starts its copy to the host while another
        waits for batch k's copy and pastes it back, and the caller (the encoder) takes the batch before; each
        stage waits on a bounded queue, so the GPU does not wait for paste-back or x264."""
        rendered = self._rendered_batches(job)
        if self.overlap:
            yield from map_ahead(functools.partial(self._finish_batch, job=job), rendered, depth=1)
            return
        for batch in rendered:
            yield self._finish_batch(batch, job)

    def _rendered_batches(self, job: "_Job") -> Iterator[_Rendered]:
        """The device side of `_frame_batches`: motion -> driving keypoints -> batches of rendered frames."""
        ctl, source = job.controls, job.source
        renderer = self.load()["renderer"]
        pending: list[torch.Tensor] = []
        first, frame_0 = 0, None
        progress = RenderingProgress(job.num_frames)
        try:
            if job.given_motion is not None:
                pieces = iter([job.given_motion.to(source.x_s.device)])
            else:
                pieces = self.controlled_pieces(job)
            for motion in itertools.chain(prefetch(pieces, stream=self.device) if self.overlap else pieces, [None]):
                if motion is not None:
                    frame_0 = motion[:1] if frame_0 is None else frame_0
                    with self._stage("sampling"):
                        x_d = self.driving_keypoints(source.info, motion, ctl, first=frame_0)
                        if not torch.isfinite(x_d).all():
                            raise self._broken_motion("driving keypoints")
                    pending.append(x_d)
                    job.keep(motion, x_d)
                ready = torch.cat(pending) if pending else None
                while ready is not None and ready.shape[0] and (ready.shape[0] >= ctl.batch_size or motion is None):
                    batch, ready = ready[: ctl.batch_size], ready[ctl.batch_size :]
                    yield self._render_batch(renderer, source, batch, first, job, job.paste)
                    first += batch.shape[0]
                    progress.update(batch.shape[0])
                pending = [ready] if ready is not None and ready.shape[0] else []
        finally:
            progress.close()
        self.timings.frames = first

    def _render_batch(
        self, renderer: Any, source: Source, x_d: torch.Tensor, first: int, job: "_Job", paste: PasteBack | None
    ) -> _Rendered:
        """Driving keypoints (B, 21, 3) -> the batch's uint8 frames on their way to the host (`_finish_batch`)."""
        with self._stage("rendering"):
            batch = x_d.to(source.x_s)
            if job.controls.stitching:
                batch = renderer.stitch(source.x_s, batch)
            frames = renderer.render(source, batch, chunk_size=job.controls.batch_size)
            flags = frame_flags(frames)
            # x255 then truncation to uint8, as LivePortrait's parse_output (not rounding); on the device: 4x fewer
            # bytes to copy than float32
            frames = (frames.float().clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            if frames.device.type != "cuda":
                return _Rendered(frames.cpu(), flags.cpu(), first, paste)
            host = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True)
            host_flags = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
            host.copy_(frames, non_blocking=True)
            host_flags.copy_(flags, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()
            return _Rendered(host, host_flags, first, paste, copied)

    def _finish_batch(self, rendered: _Rendered, job: "_Job") -> np.ndarray:
        """The host side of a rendered batch: wait for its copy, check it, paste back -> uint8 (B, H, W, 3)."""
        with self._stage("writing"):
            if rendered.copied is not None:
                rendered.copied.synchronize()
            check_frames(rendered.flags, rendered.first, self.checkpoint_dir)
            frames = rendered.frames.numpy()
            if rendered.paste is not None:
                frames = rendered.paste(frames)[:, : job.height, : job.width]
        return frames

    def _finish_timings(self, job: "_Job") -> None:
        self.timings.wall = time.perf_counter() - self._wall_start

    def _broken_motion(self, what: str) -> KDTalkerError:
        return KDTalkerError(
            f"the {what} holds NaN or infinite values: {self.checkpoint_dir / 'KDTalker.pth'} or "
            f"{self.checkpoint_dir / NORM_FILE} is broken (or they do not belong together); download both again"
        )

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self.timings, name, getattr(self.timings, name) + time.perf_counter() - start)


def _npz_path(path: str | os.PathLike, key: str) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ConfigError(f"{key}={path} must be an .npz file")
    return path


def save_motion_file(path: str | os.PathLike, job: "_Job") -> Path:
    """Write what was rendered: motion (T, 70) raw [scale, yaw, pitch, roll, t(3), exp(63)], x_d (T, 21, 3), and
    the source's keypoint info as source_<name> (pitch/yaw/roll degrees, t, exp, scale, kp), atomically."""
    arrays = {"motion": torch.cat(job.motion).numpy(), "x_d": torch.cat(job.x_d).numpy()}
    for name, value in (job.source.info or {}).items():
        arrays[f"source_{name}"] = value.detach().float().cpu().numpy()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return Path(path)


def load_motion_file(path: str | os.PathLike) -> torch.Tensor:
    """A save_motion file (or any .npz with `motion` (T, 70), finite) -> (T, 70) float32; ConfigError otherwise."""
    path = _npz_path(path, "motion_file")
    if not path.is_file():
        raise ConfigError(f"motion_file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "motion" not in data:
                raise ConfigError(
                    f"motion_file {path} has no 'motion' array (it has: {', '.join(data.files) or 'none'})"
                )
            motion = np.asarray(data["motion"])
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"motion_file {path} is not a readable .npz ({exc})") from None
    if motion.ndim != 2 or motion.shape[1] != MOTION_DIM or motion.shape[0] == 0:
        raise ConfigError(f"motion_file {path}: 'motion' must be (frames, {MOTION_DIM}), got {motion.shape}")
    if not np.issubdtype(motion.dtype, np.floating) or not np.isfinite(motion).all():
        raise ConfigError(f"motion_file {path}: 'motion' must hold finite numbers")
    return torch.from_numpy(motion.astype(np.float32))


def _output_size(image: np.ndarray, paste_back: bool) -> tuple[int, int]:
    """(width, height) of the video: the full image's (even, for yuv420p) with paste_back, else the 512x512 crop."""
    return (image.shape[1] // 2 * 2, image.shape[0] // 2 * 2) if paste_back else (512, 512)


def default_batch_size(device: torch.device) -> int:
    """Frames per render batch that measured fastest per frame (README, "Speed"): 1 on CPU, where a bigger batch
    only adds memory traffic (batch 4 cost 12% more per frame on a 2-core AVX-512 CPU), 16 on a GPU."""
    return 16 if device.type == "cuda" else 1


def frame_flags(frames: torch.Tensor) -> torch.Tensor:
    """Rendered frames (B, 3, H, W) -> (B, 2) bool: [holds NaN/inf, is one flat colour], computed where they are."""
    flat = frames.flatten(1)
    bad_values = ~torch.isfinite(flat).all(dim=1)
    constant = (flat.amax(dim=1) - flat.amin(dim=1)) == 0
    return torch.stack([bad_values, constant], dim=1)


def check_frames(flags: torch.Tensor, first: int, checkpoint_dir: Path) -> None:
    """KDTalkerError when a frame's flags (B, 2) from `frame_flags` say NaN/inf or one flat colour: broken weights."""
    for index, (nan, flat_colour) in enumerate(flags.tolist()):
        if nan or flat_colour:
            what = "holds NaN or infinite values" if nan else "is a single flat colour"
            raise KDTalkerError(
                f"rendered frame {first + index} {what}: the LivePortrait weights under "
                f"{checkpoint_dir / 'liveportrait'} (or {checkpoint_dir / NORM_FILE}) are broken; download them again"
            )


def motions_of(info: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """LivePortrait keypoint info of B images -> their raw motion (B, 70) [scale, yaw, pitch, roll, t(3), exp(63)]."""
    b = info["exp"].shape[0]
    parts = [info[k].reshape(b, -1).float() for k in ("scale", "yaw", "pitch", "roll", "t", "exp")]
    return pack_motion(*parts)


def source_motion(info: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """LivePortrait keypoint info of one image -> its raw 70-d motion [scale, yaw, pitch, roll, t(3), exp(63)]."""
    return motions_of(info)[0]


def _check_sampler(denoiser: Any, scheduler: Any, path: Path) -> None:
    """A diffusion model needs a diffusion sampler, a one-pass generator (paper Table 4) the one-step sampler."""
    trained = getattr(denoiser, "trained_as", "diffusion")
    one_pass = isinstance(scheduler, OneStepSampler)
    if one_pass and trained == "diffusion":
        raise ConfigError(
            f"{path} is a diffusion model, but the sampler is the one-pass generators' (generator=vae|gan|vae_gan, "
            "diffusion=one_step): drop that override, or use the checkpoint folder of a model trained with it"
        )
    if not one_pass and trained != "diffusion":
        raise ConfigError(
            f"{path} is a generator={trained} model (paper Table 4): sample it with generator={trained} "
            f"(diffusion=one_step), not {type(scheduler).__name__}"
        )


def exported_model_config(checkpoint_dir: str | os.PathLike) -> DictConfig | None:
    """checkpoint_dir/model.yaml ({model: {_target_, ...}, optional diffusion: {_target_, ...}}), None when absent."""
    path = Path(checkpoint_dir) / MODEL_CONFIG_FILE
    if not path.exists():
        return None
    how = "it is written by scripts/export_checkpoint.py; export the run again or remove the file"
    try:
        node = OmegaConf.load(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as exc:
        detail = next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
        raise ConfigError(f"{path} is not a readable model config ({detail}); {how}") from None
    for key in ("model", "diffusion"):
        value = node.get(key) if isinstance(node, DictConfig) else None
        if (key == "model" or value is not None) and not (
            isinstance(value, DictConfig) and isinstance(value.get("_target_"), str)
        ):
            raise ConfigError(f"{path} is not a model config: it needs a mapping with {key}._target_; {how}")
    return node


def _with_exported_model(cfg: DictConfig) -> tuple[DictConfig, str | None]:
    """cfg with the model (and diffusion) nodes of checkpoint_dir/model.yaml, and a note when they change cfg."""
    exported = exported_model_config(cfg.checkpoint_dir)
    if exported is None:
        return cfg, None
    groups = [key for key in ("model", "diffusion") if key in exported]
    shown = []
    for key in groups:
        old = OmegaConf.to_container(cfg.get(key, {}), resolve=True)
        new = OmegaConf.to_container(exported[key], resolve=True)
        changed = [f"{key}.{k}={new.get(k)}" for k in {**old, **new} if old.get(k, "-") != new.get(k, "-")]
        if changed:
            shown.append(", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else ""))
    path = Path(cfg.checkpoint_dir) / MODEL_CONFIG_FILE
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for key in groups:
            cfg[key] = exported[key]
    if not shown:
        return cfg, None
    return cfg, f"model config of {path} used instead of the composed one ({'; '.join(shown)})"


def _guidance(value: Guidance | Mapping[str, Any] | None) -> Guidance:
    """A Guidance from itself, a dict of its keys (a config node) or None (no guidance)."""
    if value is None or isinstance(value, Guidance):
        return value or Guidance()
    known = {f.name for f in fields(Guidance)}
    if set(value) - known:
        raise ConfigError(f"unknown guidance key(s) {sorted(set(value) - known)}; known: {sorted(known)}")
    return Guidance(**dict(value)).validate()


def _check_signals(
    ctl: Controls,
    driven_audio: Any,
    driving_video: Any,
    pose_file: Any,
    has_motion_file: bool,
) -> None:
    """ConfigError when the control asks for a signal the run lacks, or a signal is given that no region uses."""
    control = ctl.control
    if has_motion_file:
        if driving_video is not None or pose_file is not None or not control.is_audio_only or ctl.uses_motion:
            raise ConfigError(
                "motion_file is rendered as it is: it takes no driving_video, pose_file, control.* or signals"
            )
        return
    if control.uses("audio") and ctl.uses_audio and driven_audio is None:
        raise ConfigError("driven_audio=PATH is required (or motion_file=PATH.npz to render a saved motion)")
    if (control.uses("video") or ctl.uses_motion) and driving_video is None:
        why = "a control.* key asks for the video signal" if control.uses("video") else f"signals={ctl.signals}"
        raise ConfigError(f"{why}: give driving_video=PATH")
    if driving_video is not None and not control.uses("video") and not ctl.uses_motion:
        raise ConfigError(
            "driving_video is given but no region follows it: set control.pose=video and/or control.lips, "
            "control.eyes, control.expression=video (or signals=motion|both with model=kdtalker_multisignal)"
        )
    if (control.pose == "file") != (pose_file is not None):
        raise ConfigError("control.pose=file and pose_file=PATH go together")
