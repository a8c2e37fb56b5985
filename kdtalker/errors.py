"""The exceptions a user can cause. Entry scripts print their message (no traceback) and exit 1."""

from __future__ import annotations


class KDTalkerError(Exception):
    """Base class: something about the user's input, files or config is wrong; the message says what to do.

    `details`: items the one-line message introduces (e.g. every missing file), printed indented under it."""

    def __init__(self, *args: object, details: tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        self.details = tuple(details)


class AudioError(KDTalkerError):
    """An audio file is missing, unreadable, empty or too short."""


class ImageError(KDTalkerError):
    """An image is missing, unreadable or has no usable face."""


class CheckpointError(KDTalkerError):
    """A weight file is missing, truncated or is not the file expected."""


class VideoError(KDTalkerError):
    """A video cannot be read or written."""


class OutputError(KDTalkerError):
    """An output cannot be written (a folder, no permission, disk full, a special file): nothing else can go on."""


class ConfigError(KDTalkerError):
    """A configuration value is invalid."""


class PeerFailed(KDTalkerError):
    """Another process of the same torchrun job failed and reports it itself: this one exits 1 without a line."""


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread so that every clean-up runs (a BaseException, like
    KeyboardInterrupt, so that no `except Exception` swallows it)."""

    def __init__(self, signum: int = 15) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum
