"""KDTalker inference: one portrait + one speech recording -> a talking-head mp4 with the speech as its sound.

    image --crop 256--> renderer.encode_source: Source(info, f_s, x_s)     wav --> Wav2Lip features (T, 512)
                                \\                                                   /
                                 DDIM over 64-frame windows (normalised motion (T, 70))           motion.py
                                 -> denormalise -> Kalman smoothing -> head-motion scale
                                 -> driving keypoints (absolute | relative) [-> stitching]        compose.py
                                 -> render in batches -> [paste back] -> ffmpeg (H.264 + AAC)     frames.py, video.py

Memory is flat in the audio length: only the (T, 70) motion and the (T, 21, 3) keypoints (Face-vid2vid: (T, 51) and
(T, 15, 3), and 256 px frames; `layout`) exist for the whole clip; frames are rendered `batch_size` at a time and
handed to ffmpeg as they come. The per-run inputs are one `Request` (request.py), checked before any work; dubbing a
source video is dubbing.py.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from kdtalker.audio.vad import speech_frames
from kdtalker.device import check_dtype, cudnn_autotuned, fastest_dtype, resolve_device, resolve_dtype
from kdtalker.diffusion import MotionNorm
from kdtalker.diffusion.guidance import check_signals
from kdtalker.diffusion.live import LiveSampler
from kdtalker.diffusion.sampling import check_hop
from kdtalker.errors import ConfigError, KDTalkerError
from kdtalker.fileio import atomic_path
from kdtalker.motion_layout import MotionLayout
from kdtalker.pipeline.build import inference_config, pipeline_arguments
from kdtalker.pipeline.compose import renderer_keypoints
from kdtalker.pipeline.control import load_pose_file, ping_pong, relative_video_motion
from kdtalker.pipeline.controls import Controls
from kdtalker.pipeline.driving import driving_motion
from kdtalker.pipeline.dubbing import dubbed_frames, prepare_dub
from kdtalker.pipeline.face import FaceCrop
from kdtalker.pipeline.frames import Rendered, finish_batch, output_size, render_batch
from kdtalker.pipeline.image import load_image
from kdtalker.pipeline.job import Job, read_speech
from kdtalker.pipeline.live import LiveSession, check_live_controls, live_silence
from kdtalker.pipeline.models import Models, check_sampler
from kdtalker.pipeline.motion import MotionMaker, broken_motion, source_motion
from kdtalker.pipeline.motion_file import load_motion_file, save_motion_file
from kdtalker.pipeline.paste import PasteBack
from kdtalker.pipeline.prefetch import map_ahead, prefetch
from kdtalker.pipeline.progress import RenderingProgress
from kdtalker.pipeline.request import Request
from kdtalker.pipeline.timings import Timings
from kdtalker.pipeline.video import VideoWriter
from kdtalker.pipeline.weights import NORM_FILE, check_checkpoint_dir, check_renderer_file, renderer_weights
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT


class TalkingHeadPipeline:
    """The official KDTalker inference on our modules: `from_pretrained(checkpoint_dir, ...)` or `from_config`.

    Every argument comes from the inference config (kdtalker/configs/inference.yaml, built by build.py); the
    constructor holds no defaults of its own."""

    def __init__(
        self,
        *,
        checkpoint_dir: str | os.PathLike,
        device: str,
        dtype: str,
        controls: Controls,
        kalman_transition_cov: float,
        kalman_observation_cov: float,
        scheduler: Any,
        model_class: type,
        model_kwargs: Mapping[str, Any],
        renderer_factory: Callable[..., Any],
        layout: MotionLayout,
        audio_factory: Callable[..., Any],
        overlap: bool | None,
        cuda_graphs: bool | None,
        live_controls: Mapping[str, Any],
    ):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = resolve_device(device)
        self.dtype = check_dtype(
            self.device, fastest_dtype(self.device) if dtype == "fastest" else resolve_dtype(dtype)
        )
        self.controls = controls.validate()
        self.kalman_transition_cov = kalman_transition_cov
        self.kalman_observation_cov = kalman_observation_cov
        self.scheduler = scheduler
        self.model_class = model_class
        self.model_kwargs = dict(model_kwargs)
        self.renderer_factory = renderer_factory  # the renderer group's _target_, called with the device and dtype
        self.layout = layout  # the renderer's motion: what the model samples, smoothing and composition read
        self.audio_factory = audio_factory  # the audio group's _target_, called with the device
        # sample window k+1 while window k renders: on by default where the two run side by side (a GPU)
        self.overlap = self.device.type == "cuda" if overlap is None else bool(overlap)
        if cuda_graphs and self.device.type != "cuda":
            raise ConfigError(f"cuda_graphs=true needs device=cuda (this run's device is {self.device})")
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else bool(cuda_graphs)
        self.live_controls = dict(live_controls)  # the controls a live session takes instead (the `live` node)
        # Fail before any work when a weight file is missing, truncated or the wrong one.
        self.weight_files = check_checkpoint_dir(self.checkpoint_dir, layout)
        renderer_file = getattr(renderer_factory, "keywords", {}).get("weights")
        check_renderer_file(renderer_file, layout)
        self.renderer_weights = renderer_weights(self.checkpoint_dir, layout, renderer_file)  # named by frame checks
        self.controls.crop.check()
        self.models: Models | None = None
        self.timings = Timings()
        self.notes: list[str] = []  # what the last run wants the user to know (one line each)
        self._config_notes: list[str] = []  # about the configuration: handed to the first run's notes only

    @classmethod
    def from_pretrained(
        cls, checkpoint_dir: str | os.PathLike, *overrides: str, **settings: Any
    ) -> "TalkingHeadPipeline":
        """The weights of `checkpoint_dir` with the packaged inference config, changed by Hydra overrides
        ("preset=fast", "crop=insightface") and settings by name (device="cpu", steps=25): what inference.py runs."""
        return cls.from_config(inference_config(*overrides, checkpoint_dir=str(checkpoint_dir), **settings))

    @classmethod
    def from_config(cls, cfg: Any) -> "TalkingHeadPipeline":
        """Build from the inference config (kdtalker/configs/inference.yaml and its groups); every value comes from
        there (build.py; a checkpoint_dir/model.yaml of an exported run replaces the model group)."""
        arguments, note = pipeline_arguments(cfg)
        pipeline = cls(**arguments)
        if note is not None:
            pipeline._config_notes.append(note)
        return pipeline

    def load(self) -> Models:
        """Load every model once: renderer, audio encoder, denoiser, scheduler, normalisation statistics."""
        if self.models is not None:
            return self.models
        start = time.perf_counter()
        root = self.checkpoint_dir
        self.models = Models(
            renderer=self.renderer_factory(device=self.device, dtype=self.dtype),  # as resolved here
            audio=self.audio_factory(device=self.device),
            denoiser=self.model_class.from_pretrained(root / "KDTalker.pth", self.device, **self.model_kwargs),
            scheduler=self.scheduler,
            norm=MotionNorm.load(root / NORM_FILE, None if self.layout == LIVEPORTRAIT_LAYOUT else self.layout),
        )
        check_sampler(self.models.denoiser, self.models.scheduler, root / "KDTalker.pth")
        self.models.denoiser.cuda_graphs = self.cuda_graphs  # sampling replays its steps from graphs (step_graph.py)
        self.timings.load = time.perf_counter() - start
        return self.models

    @property
    def motion_maker(self) -> MotionMaker:
        """Motion making on the loaded models (sample, pieces, controlled)."""
        return MotionMaker(
            self.load(),
            self.kalman_transition_cov,
            self.kalman_observation_cov,
            self.timings,
            self.checkpoint_dir,
            self.layout,
        )

    def motion(self, source_image: str | os.PathLike, driven_audio: str | os.PathLike, **controls: Any) -> torch.Tensor:
        """Portrait + speech -> the motion `generate` renders, (T, dim) float32 raw in the renderer's layout
        (LivePortrait (T, 70) [scale, yaw, pitch, roll, t(3), exp(63)]; Face-vid2vid (T, 51)) after smoothing and the
        controls, without rendering (what a live session gives, `live`)."""
        ctl = self.controls.updated(controls, self.device)
        request = Request(ctl, source_image, driven_audio, streamed=True).validate().check_layout(self.layout)
        self._begin_run()
        with self._memory_errors(ctl):
            job = self._prepare(request)
            motion = torch.cat([piece.cpu() for piece in self.motion_maker.controlled(job)])
        self.timings.stop_wall()
        return motion

    def live(self, source_image: str | os.PathLike, *, render: bool = True, **controls: Any) -> LiveSession:
        """A live session on this portrait: push 16 kHz speech as it is spoken, get motion (and frames with
        `render`) a fraction of a second later (live.py). Controls as `generate` takes them; the `live` node of
        the config (hop 8) replaces the run's defaults, a keyword here replaces both."""
        if self.layout != LIVEPORTRAIT_LAYOUT:
            raise ConfigError(
                f"a live session composes LivePortrait's motion; renderer={self.layout.name} renders offline runs "
                "(generate, inference.py)"
            )
        ctl = check_live_controls(self.controls.updated({**self.live_controls, **controls}, self.device))
        self._begin_run()
        with self.timings.stage("crop"):
            image = load_image(source_image)
            face = self.crop(image, ctl)
        models = self.load()
        check_signals(models.denoiser, ctl.uses_audio, ctl.uses_motion, ctl.guidance)
        check_hop(ctl.hop, models.denoiser.window)
        with torch.inference_mode(), self.timings.stage("crop"):
            source = models.renderer.encode_source(face.image)
        info, norm = source.info, models.norm
        raw = source_motion(info, self.layout)
        denoiser = models.denoiser
        sampler = LiveSampler(
            denoiser,
            models.scheduler,
            norm.normalize(raw),
            norm.canonical_token(info["kp"].reshape(self.layout.kp_dim).float().to(raw.device)),
            steps=ctl.steps,
            hop=ctl.hop,
            generator=torch.Generator(device=denoiser.device).manual_seed(int(ctl.seed)),
            guidance=ctl.guidance,
        )
        return LiveSession(
            speech=models.audio.stream(ctl.fps),
            sampler=sampler,
            rows=self.motion_maker.rows(raw, ctl),
            controls=ctl,
            source=source,
            raw_source=raw,
            renderer=models.renderer if render else None,
            size=output_size(image, ctl.paste_back, 512),  # live: LivePortrait only (refused above otherwise)
            paste=PasteBack(image, face.matrix) if ctl.paste_back and render else None,
            checkpoint_dir=self.checkpoint_dir,
            timings=self.timings,
            quiet=live_silence(ctl, raw),
        )

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
        ctl = self.controls.updated(controls, self.device)
        inputs = (source_image, driven_audio, motion_file, driving_video, pose_file, source_video)
        request = Request(ctl, *inputs, output=output, save_motion=save_motion).validate().check_layout(self.layout)
        output = Path(output)
        job, batches = self._start(request)
        with atomic_path(output) as tmp:
            # the sound is the user's own recording (its rate and channels), cut to exactly the video's length
            duration = job.num_frames / ctl.fps
            writer = VideoWriter(
                tmp, job.width, job.height, ctl.fps, crf=ctl.crf, audio_file=driven_audio, duration=duration
            )
            try:
                for frames in batches:
                    with self.timings.stage("writing"):
                        writer.write(frames)
                with self.timings.stage("writing"):
                    writer.close()
                    if job.record is not None:
                        save_motion_file(save_motion, job.record, job.source.info)
            except BaseException:
                writer.abort()
                raise
        self.timings.stop_wall()
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
        ctl = self.controls.updated(controls, self.device)
        inputs = (source_image, driven_audio, motion_file, driving_video, pose_file, source_video)
        request = Request(ctl, *inputs, streamed=True).validate().check_layout(self.layout)
        job, batches = self._start(request)
        for frames in batches:
            yield from frames
        self.timings.stop_wall()

    def _start(self, request: Request) -> tuple[Job, Iterator[np.ndarray]]:
        """The prepared job and its frame batches (B, H, W, 3): a portrait, or a source video to dub."""
        self._begin_run()
        crop = functools.partial(self.crop, ctl=request.controls)
        with self._memory_errors(request.controls):
            if request.dubbing:
                job = prepare_dub(request, self.load, crop, self.timings)
                batches = dubbed_frames(job, self.load(), self.motion_maker, crop, self.timings, self.renderer_weights)
            else:
                job = self._prepare(request)
                batches = self._frame_batches(job)
        return job, self._guarded(batches, request.controls)

    def _begin_run(self) -> None:
        """Fresh timings and notes for a run (model loading, done once, keeps its time)."""
        self.timings.reset()
        self.notes, self._config_notes = self._config_notes, []

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

    def _prepare(self, request: Request) -> Job:
        """A portrait run's inputs read (cheap ones first: a wrong path fails before the models load), the source
        encoded, audio features (T, 512) and control signals (T, ...) computed once."""
        ctl = request.controls
        given = load_motion_file(request.motion_file) if request.motion_file is not None else None
        with self.timings.stage("crop"):
            image = load_image(request.source_image)
            face = self.crop(image, ctl)
        wav, features, num_frames = None, None, None
        if request.driven_audio is not None:
            with self.timings.stage("audio"):
                wav, num_frames = read_speech(request.driven_audio, ctl.fps)
        speech = None
        if wav is not None and given is None and ctl.silence.enabled and ctl.uses_audio and ctl.control.lips == "audio":
            with self.timings.stage("audio"):
                s = ctl.silence
                speech = speech_frames(wav, ctl.fps, s.detector, s.threshold, s.aggressiveness)
        if given is not None:
            num_frames = given.shape[0]
        models = self.load()
        request.check_model(models.denoiser, self.checkpoint_dir / "KDTalker.pth")
        with torch.inference_mode():
            with self.timings.stage("crop"):
                source = models.renderer.encode_source(face.image)
            raw_source = source_motion(source.info, self.layout)
            video = None
            if request.driving_video is not None:
                with self.timings.stage("crop"):
                    crop = functools.partial(self.crop, ctl=ctl)
                    video, note = driving_motion(request.driving_video, models.renderer, crop, ctl.fps, num_frames)
                if note is not None:
                    self.notes.append(note)
                num_frames = num_frames or video.shape[0]  # video-only: as long as the video
                video = relative_video_motion(video[torch.from_numpy(ping_pong(len(video), num_frames))], raw_source)
            pose = None
            if request.pose_file is not None:
                pose = load_pose_file(request.pose_file, num_frames, ctl.fps, raw_source)
            if given is None and ctl.control.uses("audio") and ctl.uses_audio:
                with self.timings.stage("audio"):
                    features = models.audio(wav, ctl.fps)
        frame_size = face.image.shape[0] * models.renderer.frame_scale  # the renderer's frames: 512 or 256 px
        paste = PasteBack(image, face.frame_matrix(frame_size), frame_size) if ctl.paste_back else None
        width, height = output_size(image, ctl.paste_back, frame_size)
        return Job(
            request,
            source,
            features,
            num_frames,
            paste,
            width,
            height,
            given_motion=given,
            video_motion=video,
            pose_track=pose,
            speech=speech,
        )

    def crop(self, image: np.ndarray, ctl: Controls | None = None) -> FaceCrop:
        """(H, W, 3) uint8 RGB -> the 256x256 source crop by the configured method (the crop group)."""
        return (ctl or self.controls).crop(image)

    @torch.inference_mode()  # on a generator: only while it runs, not in the caller's code between frames
    def _frame_batches(self, job: Job) -> Iterator[np.ndarray]:
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

    def _rendered_batches(self, job: Job) -> Iterator[Rendered]:
        """The device side of `_frame_batches`: motion -> driving keypoints -> batches of rendered frames."""
        ctl, source = job.controls, job.source
        renderer = self.load().renderer
        pending: list[torch.Tensor] = []
        first, frame_0 = 0, None
        progress = RenderingProgress(job.num_frames)
        try:
            if job.given_motion is not None:
                pieces = iter([job.given_motion.to(source.x_s.device)])
            else:
                pieces = self.motion_maker.controlled(job)
            for motion in itertools.chain(prefetch(pieces, stream=self.device) if self.overlap else pieces, [None]):
                if motion is not None:
                    frame_0 = motion[:1] if frame_0 is None else frame_0
                    with self.timings.stage("sampling"):
                        x_d = renderer_keypoints(renderer, self.layout, source.info, motion, ctl.motion_mode, frame_0)
                        if not torch.isfinite(x_d).all():
                            raise broken_motion("driving keypoints", self.checkpoint_dir)
                    pending.append(x_d)
                    job.keep(motion, x_d)
                ready = torch.cat(pending) if pending else None
                while ready is not None and ready.shape[0] and (ready.shape[0] >= ctl.batch_size or motion is None):
                    batch, ready = ready[: ctl.batch_size], ready[ctl.batch_size :]
                    # one render batch shape per run: cuDNN measures each convolution's algorithms once (float32
                    # convolutions use TF32 by PyTorch's default; the denoiser's matmuls stay full float32)
                    with self.timings.stage("rendering"), cudnn_autotuned(self.device):
                        rendered = render_batch(renderer, source, batch, first, ctl, job.paste)
                    yield rendered
                    first += batch.shape[0]
                    progress.update(batch.shape[0])
                pending = [ready] if ready is not None and ready.shape[0] else []
        finally:
            progress.close()
        self.timings.frames = first

    def _finish_batch(self, rendered: Rendered, job: Job) -> np.ndarray:
        """The host side of a rendered batch -> uint8 (B, H, W, 3), its time counted as writing."""
        with self.timings.stage("writing"):
            return finish_batch(rendered, job.width, job.height, self.renderer_weights)
