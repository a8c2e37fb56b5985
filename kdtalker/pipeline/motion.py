"""Motion making: the models' motion for a source, in three layers of one thing.

sample      the whole clip at once: denormalised, smoothed motion (T, dim) in the renderer's layout (LivePortrait 70)
pieces      the same, piece by piece as windows are sampled (what streaming renders from)
mixed       the pieces with each face region taken from its control signal (driving video, pose file)
controlled  the mixed pieces with the lips eased to a neutral mouth in the speech's pauses (silence on)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from kdtalker.diffusion import region_mask
from kdtalker.diffusion.guidance import leading_signal
from kdtalker.diffusion.motion import MotionNorm
from kdtalker.diffusion.multisignal import SIGNAL_REGIONS
from kdtalker.diffusion.sampling import motion_windows
from kdtalker.diffusion.smoothing import StreamingSmoother
from kdtalker.errors import ConfigError, KDTalkerError
from kdtalker.motion_layout import MotionLayout
from kdtalker.pipeline.control import mix_motion
from kdtalker.pipeline.controls import Controls
from kdtalker.pipeline.job import Job
from kdtalker.pipeline.keyframes import keyframe_rows, known_frames
from kdtalker.pipeline.models import Models
from kdtalker.pipeline.silence import quiet_lips
from kdtalker.pipeline.timings import Timings
from kdtalker.pipeline.weights import NORM_FILE

KeypointInfo = Mapping[str, torch.Tensor]  # a renderer's keypoint info of images: its layout's parts, and kp


class MotionMaker:
    """Motion from the loaded models for one source in the renderer's `layout`; Kalman settings as the pipeline's,
    busy time to `timings`."""

    def __init__(
        self,
        models: Models,
        transition_cov: float,
        observation_cov: float,
        timings: Timings,
        checkpoint_dir: Path,
        layout: MotionLayout,
    ):
        self.models = models
        self.layout = layout
        self.transition_cov = transition_cov
        self.observation_cov = observation_cov
        self.timings = timings
        self.checkpoint_dir = checkpoint_dir

    def sample(
        self, source_info: KeypointInfo, features: Tensor | None, ctl: Controls, driving: Tensor | None = None
    ) -> torch.Tensor:
        """Source keypoint info + audio features (T, 512) -> denormalised, smoothed motion (T, dim) float32.

        driving: the raw driving motion (T, 70) on the source (relative_video_motion) for ctl.signals=motion|both;
        features None with signals=motion."""
        return torch.cat(list(self.pieces(source_info, features, ctl, driving)))

    def pieces(
        self, source_info: KeypointInfo, features: Tensor | None, ctl: Controls, driving: Tensor | None = None
    ) -> Iterator[torch.Tensor]:
        """As `sample`, in pieces (n, dim) that are final as soon as they come (window by window, smoothing lag)."""
        norm = self.models.norm
        if ctl.uses_motion and driving is None:
            raise ConfigError(f"signals={ctl.signals} needs the driving motion (driving_video=PATH)")
        audio = features.float()[None] if ctl.uses_audio else None
        motion = norm.normalize(driving.float())[None] if ctl.uses_motion else None
        lead = leading_signal(audio, motion)
        num_frames = lead.shape[1]
        raw = source_motion(source_info, self.layout).to(lead.device)  # (dim,) unnormalised
        ori = norm.canonical_token(source_info["kp"].reshape(self.layout.kp_dim).float().to(raw.device))
        generator = torch.Generator(device=self.models.denoiser.device).manual_seed(int(ctl.seed))
        source = norm.normalize(raw)
        known = known_frames(ctl.keyframes, num_frames, ctl.fps, source)
        pinned = keyframe_rows(ctl.keyframes, num_frames, ctl.fps)
        windows = motion_windows(
            self.models.denoiser,
            self.models.scheduler,
            audio,
            source[None],
            ori[None],
            steps=ctl.steps,
            generator=generator,
            driving=motion,
            regions=region_mask(SIGNAL_REGIONS[ctl.signals])[None] if motion is not None else None,
            guidance=ctl.guidance,
            hop=ctl.hop,
            known=known,
        )
        post = self.rows(raw, ctl, pinned)
        done = 0
        while True:
            with self.timings.stage("sampling"):
                piece = next(windows, None)
                if piece is None:
                    rows = post.finish()
                else:
                    x0 = piece[1][0, : num_frames - done]
                    done += x0.shape[0]
                    rows = post.push(x0)
            if rows.shape[0]:
                yield rows
            if piece is None:
                break
        if done != num_frames:
            raise KDTalkerError(f"the sampler returned {done} frames for {num_frames} audio frames")

    def rows(self, raw: Tensor, ctl: Controls, pinned: Sequence[int] = ()) -> "MotionRows":
        """The post-processing of this run's sampled frames (raw: the source's unnormalised motion (dim,))."""
        return MotionRows(
            self.models.norm, raw, ctl, self.transition_cov, self.observation_cov, self.checkpoint_dir, pinned,
            self.layout,
        )  # fmt: skip

    def controlled(self, job: Job) -> Iterator[torch.Tensor]:
        """The motion to render, in pieces: the sampled audio motion with each region from its control signal, the
        lips eased to the neutral mouth in the speech's pauses when the run detects them (silence.py)."""
        ctl = job.controls
        if job.speech is None:
            yield from self.mixed(job)
            return
        relative = ctl.motion_mode == "relative"
        source = source_motion(job.source.info, self.layout)
        yield from quiet_lips(self.mixed(job), job.speech, source, ctl.silence, ctl.fps, relative)

    def mixed(self, job: Job) -> Iterator[torch.Tensor]:
        """The sampled audio motion in pieces with each region from its control signal."""
        ctl, source = job.controls, job.source
        driving = job.video_motion if ctl.uses_motion else None
        if ctl.control.is_audio_only:
            yield from self.pieces(source.info, job.features, ctl, driving)
            return
        raw_source = source_motion(source.info, self.layout)
        if ctl.control.uses("audio"):
            audio_pieces = self.pieces(source.info, job.features, ctl, driving)
        else:
            audio_pieces = iter([None])
        done = 0
        for audio in audio_pieces:
            n = job.num_frames - done if audio is None else audio.shape[0]
            rows = slice(done, done + n)
            video = None if job.video_motion is None else job.video_motion[rows]
            pose = None if job.pose_track is None else job.pose_track[rows]
            yield mix_motion(ctl.control, raw_source, audio=audio, video=video, pose=pose)
            done += n


def motions_of(info: KeypointInfo, layout: MotionLayout) -> torch.Tensor:
    """A renderer's keypoint info of B images -> their raw motion (B, dim) in its layout (LivePortrait: (B, 70)
    [scale, yaw, pitch, roll, t(3), exp(63)]; Face-vid2vid: (B, 51) [yaw, pitch, roll, t(3), exp(45)])."""
    b = info["exp"].shape[0]
    return layout.pack(**{name: info[name].reshape(b, -1).float() for name, _ in layout.parts})


def source_motion(info: KeypointInfo, layout: MotionLayout) -> torch.Tensor:
    """A renderer's keypoint info of one image -> its raw motion (dim,) in the renderer's layout."""
    return motions_of(info, layout)[0]


def broken_motion(what: str, checkpoint_dir: Path) -> KDTalkerError:
    """The error for NaN/inf in `what` (sampled motion, driving keypoints): the diffusion files are broken."""
    return KDTalkerError(
        f"the {what} holds NaN or infinite values: {checkpoint_dir / 'KDTalker.pth'} or "
        f"{checkpoint_dir / NORM_FILE} is broken (or they do not belong together); download both again"
    )


class MotionRows:
    """Sampled normalised frames -> final motion rows (n, dim) of `layout`, piece by piece, as the official
    post-processing: denormalised and checked, Kalman-smoothed with a fixed lag (rows come out once final),
    keyframe poses held, the head motion scaled about the source pose. Offline runs and live sessions share it."""

    def __init__(
        self,
        norm: MotionNorm,
        raw: Tensor,
        ctl: Controls,
        transition_cov: float,
        observation_cov: float,
        checkpoint_dir: Path,
        pinned: Sequence[int],
        layout: MotionLayout,
    ):
        self.norm, self.raw, self.ctl, self.checkpoint_dir, self.pinned = norm, raw, ctl, checkpoint_dir, pinned
        self.pose = layout.span("yaw", "t")  # head pose: angles + translation
        # Official: pitch, yaw, roll, t and exp Kalman-smoothed, the scale left as sampled (the layout's smoothed
        # parts). The strength scales the observation noise: more noise = trust the samples less = smoother.
        self.smoother = StreamingSmoother(
            transition_cov, observation_cov * ctl.smoothing, enabled=ctl.smoothing > 0, layout=layout
        )
        self.emitted = 0

    def push(self, x0: Tensor) -> Tensor:
        """(m, dim) normalised frames -> the (n, dim) rows that became final."""
        motion = self.norm.denormalize(x0).float()
        if not torch.isfinite(motion).all():
            raise broken_motion("sampled motion", self.checkpoint_dir)
        return self._final(self.smoother.push(motion.cpu().numpy()))

    def finish(self) -> Tensor:
        """The rows the smoother still holds, smoothed as the clip's last."""
        return self._final(self.smoother.finish())

    def _final(self, smoothed: np.ndarray) -> Tensor:
        rows, raw, pose = torch.from_numpy(smoothed).to(self.raw.device), self.raw, self.pose
        # keyframes hold the source pose exactly, also after smoothing (which moves a frame by a fraction of its
        # neighbours' difference: the sampled keyframe is the source pose up to normalisation's rounding, so this
        # changes the smoothed value by that fraction only)
        here = [f - self.emitted for f in self.pinned if self.emitted <= f < self.emitted + rows.shape[0]]
        rows[here, pose] = raw[pose]
        self.emitted += rows.shape[0]
        if self.ctl.head_motion_scale != 1.0:
            # Pose = angles and translation; the expression is left as predicted.
            rows[:, pose] = raw[pose] + self.ctl.head_motion_scale * (rows[:, pose] - raw[pose])
        return rows
