"""KDTalker: audio-driven talking portraits by diffusion over LivePortrait's implicit 3D keypoints."""

from kdtalker.errors import KDTalkerError

__all__ = ["KDTalkerError"]
__version__ = "0.1.0"
