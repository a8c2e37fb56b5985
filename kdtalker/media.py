"""The ffmpeg binary that every part runs (the one imageio-ffmpeg ships, or the one IMAGEIO_FFMPEG_EXE names)."""

from __future__ import annotations

import imageio_ffmpeg

from kdtalker.errors import VideoError


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary; VideoError saying how to get one when there is none."""
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise VideoError(
            f"no ffmpeg binary found ({exc}); reinstall imageio-ffmpeg (`pip install -r requirements.txt`)"
        ) from exc
