"""One run's inputs (`Request`): the files and the resolved controls, checked together before any work is done."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from kdtalker.diffusion import Denoiser
from kdtalker.diffusion.guidance import check_signals
from kdtalker.diffusion.sampling import check_hop
from kdtalker.errors import ConfigError, VideoError
from kdtalker.fileio import check_not_input, check_output_path
from kdtalker.motion_layout import MotionLayout
from kdtalker.pipeline.controls import Controls
from kdtalker.pipeline.motion_file import npz_path

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class Request:
    """What one `generate` or `stream` call asks for: paths as the caller gave them, controls resolved.

    motion_file: render a saved motion instead of sampling one. driving_video / pose_file: control signals.
    source_video (instead of source_image): dubbing, every frame its own source. output: the .mp4 to write unless
    `streamed` (frames yielded instead). save_motion: also write the rendered motion (.npz)."""

    controls: Controls
    source_image: PathLike | None = None
    driven_audio: PathLike | None = None
    motion_file: PathLike | None = None
    driving_video: PathLike | None = None
    pose_file: PathLike | None = None
    source_video: PathLike | None = None
    output: PathLike | None = None
    save_motion: PathLike | None = None
    streamed: bool = False  # frames are yielded (stream), no output written

    @property
    def dubbing(self) -> bool:
        """Whether a source video is dubbed (rather than a portrait animated)."""
        return self.source_video is not None

    @property
    def records_motion(self) -> bool:
        """Whether the rendered motion and keypoints are kept for save_motion (copied to the host only then)."""
        return self.save_motion is not None

    def validate(self) -> "Request":
        """ConfigError (VideoError for the output's type) for inputs that do not go together; returns self.

        Only names and places are checked here (outputs writable, not an input; signals as the control asks);
        reading each file reports its own errors."""
        check_required(self.source_image, self.source_video, self.output, writes=not self.streamed)
        if not self.streamed:
            output = Path(self.output)
            if output.suffix.lower() != ".mp4":
                raise VideoError(f"output {output} must be an .mp4 file")
            check_output_path(output, "the video")  # a folder, a read-only place or /proc fails now, not later
            if self.save_motion is not None:
                check_output_path(npz_path(self.save_motion, "save_motion"), "the motion file")
            inputs = {
                "source_image": self.source_image,
                "driven_audio": self.driven_audio,
                "motion_file": self.motion_file,
                "driving_video": self.driving_video,
                "pose_file": self.pose_file,
                "source_video": self.source_video,
            }
            check_not_input(output, inputs, "output")
            if self.save_motion is not None:
                check_not_input(Path(self.save_motion), inputs, "save_motion")
        if self.dubbing:
            self._check_dubbing()
        else:
            self._check_signals()
        return self

    def _check_dubbing(self) -> None:
        ctl = self.controls
        signals = (self.motion_file, self.driving_video, self.pose_file)
        if any(x is not None for x in signals) or not ctl.control.is_audio_only or ctl.uses_motion:
            raise ConfigError(
                "source_video keeps the video's own pose, eyes and expression and moves the lips with the audio: "
                "it takes no motion_file, driving_video, pose_file, control.* or signals"
            )
        if self.driven_audio is None:
            raise ConfigError("source_video needs driven_audio=PATH: the speech its lips will follow")

    def _check_signals(self) -> None:
        """ConfigError when the control asks for a signal the run lacks, or a signal is given that no region uses."""
        ctl = self.controls
        control = ctl.control
        if self.motion_file is not None:
            given = self.driving_video is not None or self.pose_file is not None
            if given or not control.is_audio_only or ctl.uses_motion:
                raise ConfigError(
                    "motion_file is rendered as it is: it takes no driving_video, pose_file, control.* or signals"
                )
            return
        if control.uses("audio") and ctl.uses_audio and self.driven_audio is None:
            raise ConfigError("driven_audio=PATH is required (or motion_file=PATH.npz to render a saved motion)")
        if (control.uses("video") or ctl.uses_motion) and self.driving_video is None:
            why = "a control.* key asks for the video signal" if control.uses("video") else f"signals={ctl.signals}"
            raise ConfigError(f"{why}: give driving_video=PATH")
        if self.driving_video is not None and not control.uses("video") and not ctl.uses_motion:
            raise ConfigError(
                "driving_video is given but no region follows it: set control.pose=video and/or control.lips, "
                "control.eyes, control.expression=video (or signals=motion|both with model=kdtalker_multisignal)"
            )
        if (control.pose == "file") != (self.pose_file is not None):
            raise ConfigError("control.pose=file and pose_file=PATH go together")

    def check_layout(self, layout: MotionLayout) -> "Request":
        """ConfigError for a control the renderer's motion layout has no meaning for; returns self.

        The LivePortrait layout takes every control. Another renderer (Face-vid2vid, Table 5) has no scale, no
        stitching MLPs and no named keypoint groups, and the controls below compose LivePortrait's 70-d motion: such
        a run samples from the audio and renders in absolute mode."""
        if layout.name == "liveportrait":
            return self
        ctl, name = self.controls, f"renderer={layout.name}"
        grouped = [
            f"control.{r}={getattr(ctl.control, r)}" for r in ("lips", "eyes") if r not in layout.keypoint_regions
        ]
        ungrouped = [g for g in grouped if not g.endswith("=audio")]
        refused = [
            (ctl.stitching, "stitching=true: stitching is LivePortrait's MLP; set stitching=false"),
            (bool(ungrouped), f"{', '.join(ungrouped)}: its {layout.num_kp} keypoints have no lip or eye group"),
            (
                not ctl.control.is_audio_only,
                "control.*: region control mixes LivePortrait's motion; leave control as is",
            ),
            (ctl.signals != "audio", f"signals={ctl.signals}: the multi-signal model is LivePortrait's"),
            (ctl.motion_mode != "absolute", f"motion_mode={ctl.motion_mode}: only absolute motion"),
            (ctl.silence.enabled, f"silence.detector={ctl.silence.detector}: it has no lip keypoints to ease"),
            (bool(ctl.keyframes), "keyframes: they hold LivePortrait's pose channels; keyframes=null"),
            (self.driving_video is not None, "driving_video: a driving video gives LivePortrait's motion"),
            (self.pose_file is not None, "pose_file: a pose file gives LivePortrait's pose"),
            (self.source_video is not None, "source_video: dubbing moves LivePortrait's lip keypoints"),
            (self.motion_file is not None, "motion_file: motion files hold LivePortrait's 70-d motion"),
            (self.save_motion is not None, "save_motion: motion files hold LivePortrait's 70-d motion"),
        ]
        for bad, why in refused:
            if bad:
                raise ConfigError(f"{name} does not take {why}")
        return self

    def check_model(self, denoiser: Denoiser, weights: Path) -> None:
        """ConfigError unless the loaded `denoiser` (from `weights`) takes this run's signals, guidance and hop."""
        ctl = self.controls
        check_signals(denoiser, ctl.uses_audio, ctl.uses_motion, ctl.guidance)
        if self.motion_file is None:  # a motion file is rendered as it is: no sampling, no window
            check_hop(ctl.hop, denoiser.window)
        if ctl.uses_motion and not denoiser.motion_branch_trained:
            raise ConfigError(
                f"signals={ctl.signals}: the multi-signal model's motion branch is untrained (its weights in "
                f"{weights} are missing or zero, as in the official file), so the "
                "driving video would change nothing; train it first (python train.py experiment=multisignal)"
            )


def check_required(
    source_image: PathLike | None, source_video: PathLike | None, output: PathLike | None, writes: bool = True
) -> None:
    """ConfigError unless exactly one source is given and, when a video is written, an output path."""
    if _given(source_image) and _given(source_video):
        raise ConfigError("give one source: source_image=PATH or source_video=PATH (dubbing), not both")
    if not _given(source_image) and not _given(source_video):
        raise ConfigError("source_image=PATH is required (or source_video=PATH to dub a video)")
    if writes and not _given(output):
        raise ConfigError("output=PATH is required: the .mp4 file to write")


def _given(path: PathLike | None) -> bool:
    return path is not None and str(path) != ""
