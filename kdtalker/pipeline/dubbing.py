"""Dubbing a source video: every output frame animates its own video frame, only its lips follow the audio."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from kdtalker.device import cudnn_autotuned
from kdtalker.diffusion import REGION_CHANNELS
from kdtalker.errors import ImageError, VideoError
from kdtalker.media import iter_video, video_duration
from kdtalker.pipeline.compose import driving_keypoints
from kdtalker.pipeline.control import ping_pong
from kdtalker.pipeline.face import FaceCrop
from kdtalker.pipeline.frames import finish_batch, output_size, render_batch
from kdtalker.pipeline.job import Job, read_speech
from kdtalker.pipeline.models import Models
from kdtalker.pipeline.motion import MotionMaker, source_motion
from kdtalker.pipeline.paste import PasteBack
from kdtalker.pipeline.progress import RenderingProgress
from kdtalker.pipeline.request import Request
from kdtalker.pipeline.timings import Timings

Crop = Callable[[np.ndarray], FaceCrop]


def prepare_dub(request: Request, load: Callable[[], Models], crop: Crop, timings: Timings) -> Job:
    """The audio's features (T, 512) and the video's first frame encoded as the source whose motion is sampled;
    `load` gives the models once the cheap reads have succeeded (a wrong file fails before the models load)."""
    ctl = request.controls
    with timings.stage("audio"):
        wav, num_frames = read_speech(request.driven_audio, ctl.fps)
    with timings.stage("crop"):
        first_frame = next(iter_video(request.source_video, fps=ctl.fps, batch=1))[0]
        face = crop(first_frame)
    models = load()
    with torch.inference_mode():
        with timings.stage("crop"):
            source = models.renderer.encode_source(face.image)
        with timings.stage("audio"):
            features = models.audio(wav, ctl.fps)
    width, height = output_size(first_frame, ctl.paste_back, 512)  # dubbing: LivePortrait only (request.py)
    return Job(request, source, features, num_frames, None, width, height)


@torch.inference_mode()  # on a generator: only while it runs, not in the caller's code between frames
def dubbed_frames(
    job: Job, models: Models, motion: MotionMaker, crop: Crop, timings: Timings, weights: str
) -> Iterator[np.ndarray]:
    """Every output frame (1, H, W, 3) from its own source frame: the frame's own pose, eyes and expression, and its
    lips moved by the sampled lip motion relative to the sampled sequence's first frame (weights: the renderer's files
    as a broken frame's error names them)."""
    ctl, path = job.controls, Path(job.request.source_video)
    # on the renderer's device once: a host index on device tensors is a blocking copy at every use
    lips = torch.tensor(REGION_CHANNELS["lips"], dtype=torch.long, device=job.source.x_s.device)
    sampled_0 = None
    frames = source_frames(path, ctl.fps, job.num_frames)
    index = 0
    progress = RenderingProgress(job.num_frames)
    try:
        for piece in motion.pieces(job.source.info, job.features, ctl):
            sampled_0 = piece[:1] if sampled_0 is None else sampled_0
            for row in piece:
                frame = next(frames)
                with timings.stage("crop"):
                    try:
                        face = crop(frame)
                    except ImageError as exc:
                        raise ImageError(f"frame {index} of source_video {path}: {exc}") from None
                    source = models.renderer.encode_source(face.image)
                own = source_motion(source.info, motion.layout)
                dubbed = own.clone()
                dubbed[lips] = own[lips] + (row[lips].to(own) - sampled_0[0, lips].to(own))
                with timings.stage("sampling"):
                    x_d = driving_keypoints(source.info, dubbed[None], mode="absolute")
                job.keep(dubbed[None], x_d)
                paste = PasteBack(frame, face.matrix) if ctl.paste_back else None
                with timings.stage("rendering"), cudnn_autotuned(source.x_s.device):
                    rendered = render_batch(models.renderer, source, x_d, index, ctl, paste)
                with timings.stage("writing"):
                    out = finish_batch(rendered, job.width, job.height, weights)
                index += 1
                progress.update(1)
                yield out
    finally:
        progress.close()
    timings.frames = index


def source_frames(path: Path, fps: float, count: int) -> Iterator[np.ndarray]:
    """`count` frames (H, W, 3) of the source video at `fps`, decoded as they are used; a shorter video plays back
    and forth (its frames are then kept in memory, the only case that keeps them)."""
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
