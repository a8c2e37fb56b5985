"""The LivePortrait (insightface ONNX) crop path: what can be checked without the ONNX files.

The two ONNX models are not available here, so the sessions themselves are untested; their decoding (SCRFD
anchors/NMS), the crop geometry and the paste-back of a rotated crop are checked on hand-made inputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdtalker.errors import CheckpointError
from kdtalker.pipeline.face_onnx import STRIDES, decode_scrfd, liveportrait_crop_matrix, nms
from kdtalker.pipeline.paste import PasteBack


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 100, 100], [5, 5, 105, 105], [200, 200, 260, 260]], np.float32)
    scores = np.array([0.6, 0.9, 0.8], np.float32)
    assert nms(boxes, scores, 0.4) == [1, 2]


def test_scrfd_decoding_places_a_box_at_its_anchor():
    size = 512
    outputs = []
    for stride in STRIDES:
        n = (size // stride) ** 2 * 2
        outputs.append(np.zeros((n, 1), np.float32))
    for stride in STRIDES:
        outputs.append(np.ones(((size // stride) ** 2 * 2, 4), np.float32))
    outputs += [np.zeros(((size // s) ** 2 * 2, 10), np.float32) for s in STRIDES]
    # One confident anchor at stride 16, grid cell (x=10, y=4), second anchor of the pair; distances (2, 3, 4, 5).
    cell = (4 * (size // 16) + 10) * 2 + 1
    outputs[1][cell] = 0.95
    outputs[4][cell] = (2, 3, 4, 5)
    scores, boxes = decode_scrfd(outputs, size, threshold=0.5)
    assert scores.tolist() == pytest.approx([0.95])
    cx, cy = 10 * 16, 4 * 16
    assert boxes[0].tolist() == pytest.approx([cx - 32, cy - 48, cx + 64, cy + 80])


def _face_106(centre=(300.0, 260.0), eye_dist=60.0, roll_deg=0.0) -> np.ndarray:
    """106 points: a ring of face outline points plus eyes at 33/35/40/39 and 87/89/94/93, lips at 52 and 61."""
    cx, cy = centre
    angles = -np.pi / 2 + np.linspace(0, 2 * np.pi, 106, endpoint=False)  # points 0 and 53: top and bottom
    pts = np.stack([cx + 1.2 * eye_dist * np.cos(angles), cy + 1.5 * eye_dist * np.sin(angles)], axis=1)
    pts[[33, 35, 40, 39]] = (cx - eye_dist / 2, cy - 20)
    pts[[87, 89, 94, 93]] = (cx + eye_dist / 2, cy - 20)
    pts[[52, 61]] = (cx, cy + 40)
    theta = math.radians(roll_deg)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return (pts - centre) @ rot.T + centre


def test_crop_matrix_upright_face():
    m = liveportrait_crop_matrix(_face_106())
    assert m[0, 1] == pytest.approx(0, abs=1e-6) and m[1, 0] == pytest.approx(0, abs=1e-6)
    # Extent along the face axes: 2 * 1.5 * 60 = 180 (height) -> size 180 * 2.3; vy shifts the centre up by 0.125 size.
    size = 180 * 2.3
    assert m[0, 0] == pytest.approx(512 / size, rel=1e-5)
    centre = np.array([300.0, 260.0 - 0.125 * size])
    assert (m[:, :2] @ centre + m[:, 2]) == pytest.approx([256, 256], abs=1e-3)
    bigger = liveportrait_crop_matrix(_face_106(), scale=1.5)
    assert bigger[0, 0] == pytest.approx(m[0, 0] / 1.5, rel=1e-5)


def test_crop_matrix_follows_roll_and_paste_back_inverts_it():
    m = liveportrait_crop_matrix(_face_106(roll_deg=20.0))
    # The crop's up axis is the face's: the lip centre maps straight below the eye centre.
    eye, lip = np.array([300.0, 240.0]), np.array([300.0, 300.0])
    theta = math.radians(20.0)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    eye_r, lip_r = (eye - (300, 260)) @ rot.T + (300, 260), (lip - (300, 260)) @ rot.T + (300, 260)
    e, lp = m[:, :2] @ eye_r + m[:, 2], m[:, :2] @ lip_r + m[:, 2]
    assert e[0] == pytest.approx(lp[0], abs=1e-3) and lp[1] > e[1]
    # Paste a white 512 frame back through the inverse: the face centre turns white, far corners stay black.
    import cv2

    original = np.zeros((700, 700, 3), np.uint8)
    out = PasteBack(original, cv2.invertAffineTransform(m))(np.full((1, 512, 512, 3), 255, np.uint8))[0]
    assert out[260, 300, 0] == 255 and out[0, 0, 0] == 0 and out[699, 699, 0] == 0


def test_missing_onnx_files_are_named(tmp_path):
    from test_pipeline_checkpoints import make_fake_checkpoints

    from kdtalker.pipeline import TalkingHeadPipeline

    root = make_fake_checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match=r"insightface/models/buffalo_l/det_10g\.onnx"):
        TalkingHeadPipeline.from_pretrained(root, "crop=insightface", device="cpu")
