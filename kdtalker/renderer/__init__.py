"""LivePortrait renderer: appearance/motion extractors, warping, SPADE decoder, stitching and keypoint math."""

from kdtalker.renderer.appearance import AppearanceFeatureExtractor
from kdtalker.renderer.keypoints import headpose_to_degrees, rotation_matrix, transform_keypoints
from kdtalker.renderer.motion_extractor import MotionExtractor
from kdtalker.renderer.renderer import LivePortraitRenderer, Source
from kdtalker.renderer.spade import SPADEDecoder
from kdtalker.renderer.stitching import StitchingRetargetingNetwork, apply_stitching, retarget_eye, retarget_lip
from kdtalker.renderer.warping import WarpingNetwork

__all__ = [
    "AppearanceFeatureExtractor",
    "LivePortraitRenderer",
    "MotionExtractor",
    "SPADEDecoder",
    "Source",
    "StitchingRetargetingNetwork",
    "WarpingNetwork",
    "apply_stitching",
    "headpose_to_degrees",
    "retarget_eye",
    "retarget_lip",
    "rotation_matrix",
    "transform_keypoints",
]
