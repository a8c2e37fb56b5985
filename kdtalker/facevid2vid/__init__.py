"""Face-vid2vid renderer (Table 5): canonical keypoint detector, head-pose/expression estimator, SPADE generator."""

from kdtalker.facevid2vid.checkpoints import load_networks, read_states, renderer_states
from kdtalker.facevid2vid.generator import OcclusionAwareSPADEGenerator
from kdtalker.facevid2vid.head_expression import HeadExpressionEstimator
from kdtalker.facevid2vid.keypoint_detector import KeypointDetector
from kdtalker.facevid2vid.keypoints import headpose_to_degrees, rotation_matrix, transform_keypoints
from kdtalker.facevid2vid.layout import FACEVID2VID_LAYOUT, driving_keypoints
from kdtalker.facevid2vid.renderer import FaceVid2VidRenderer, keypoint_info

__all__ = [
    "FACEVID2VID_LAYOUT",
    "FaceVid2VidRenderer",
    "HeadExpressionEstimator",
    "KeypointDetector",
    "OcclusionAwareSPADEGenerator",
    "driving_keypoints",
    "headpose_to_degrees",
    "keypoint_info",
    "load_networks",
    "read_states",
    "renderer_states",
    "rotation_matrix",
    "transform_keypoints",
]
