"""The exceptions a user can cause. Entry scripts print their message (no traceback) and exit 1."""

from __future__ import annotations


class KDTalkerError(Exception):
    """Base class: something about the user's input, files or config is wrong; the message says what to do."""


class AudioError(KDTalkerError):
    """An audio file is missing, unreadable, empty or too short."""


class ImageError(KDTalkerError):
    """An image is missing, unreadable or has no usable face."""


class CheckpointError(KDTalkerError):
    """A weight file is missing, truncated or is not the file expected."""


class VideoError(KDTalkerError):
    """A video cannot be read or written."""


class ConfigError(KDTalkerError):
    """A configuration value is invalid."""
