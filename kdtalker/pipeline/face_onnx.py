"""LivePortrait's source crop: insightface SCRFD detector + 106 landmarks (ONNX), then a rotated square crop.

Used with `crop=insightface` when the user has `insightface/models/buffalo_l/{det_10g,2d106det}.onnx` in the
checkpoint folder. The steps follow LivePortrait's cropper (our own code, same numbers):

1. Detection (det_10g.onnx, SCRFD with 3 strides x 2 anchors + 5 keypoints): the image is letterboxed into
   512x512 (top-left, zero padding), fed as RGB (x - 127.5) / 128, boxes decoded as anchor -/+ distance * stride,
   score >= 0.1, NMS at IoU 0.4; faces sorted by box area, largest first.
2. 106 landmarks (2d106det.onnx): a 192x192 crop around the box centre at scale 192 / (1.5 max(w, h)), fed as raw
   RGB 0..255; output (x, y) in [-1, 1] mapped by (v + 1) * 96 and back through the crop transform.
3. Crop (LivePortrait `crop_image`, dsize 512, scale 2.3, vx 0, vy -0.125, with rotation): the eye centre
   (mean of points 33, 35, 40, 39 and of 87, 89, 94, 93) and the lip centre ((52 + 61) / 2) fix the up axis;
   the square around the rotated landmark extent, times `scale`, shifted by vy * size along that axis, is warped
   to 512x512 (bilinear) and area-resized to 256x256.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from kdtalker.device import resolve_device
from kdtalker.errors import CheckpointError, ImageError
from kdtalker.pipeline.face import CROP_SIZE, FaceCrop, check_crop_settings
from kdtalker.pipeline.weights import crop_model_files

DET_SIZE = 512
DET_THRESH = 0.1
NMS_THRESH = 0.4
STRIDES = (8, 16, 32)
NUM_ANCHORS = 2
CROP_DSIZE = 512
CROP_SCALE = 2.3
CROP_VX, CROP_VY = 0.0, -0.125


@lru_cache(maxsize=4)
def _session(path: str, device: str):
    import onnxruntime as ort

    providers: list = ["CPUExecutionProvider"]
    kind, _, index = device.partition(":")
    if kind == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        # the pipeline's own GPU (cuda:N, e.g. a torchrun rank's), not always the first one
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(index or 0)}))
    try:
        return ort.InferenceSession(path, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
        raise CheckpointError(
            f"{path} could not be opened as an ONNX model ({exc}); download it again (see checkpoints/README.md)"
        ) from exc


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = NMS_THRESH) -> list[int]:
    """Greedy non-maximum suppression on (N, 4) boxes (insightface's +1 pixel area convention) -> kept indices."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][overlap <= threshold]
    return keep


def decode_scrfd(
    outputs: list[np.ndarray], input_size: int = DET_SIZE, threshold: float = DET_THRESH
) -> tuple[np.ndarray, np.ndarray]:
    """SCRFD's 9 raw outputs (scores, boxes, keypoints per stride) -> (scores (N,), boxes (N, 4)) in input pixels."""
    fmc = len(STRIDES)
    scores_all, boxes_all = [], []
    for level, stride in enumerate(STRIDES):
        scores = outputs[level].reshape(-1)
        distances = outputs[level + fmc].reshape(-1, 4) * stride
        side = input_size // stride
        grid = np.stack(np.mgrid[:side, :side][::-1], axis=-1).astype(np.float32).reshape(-1, 2) * stride
        centres = np.repeat(grid, NUM_ANCHORS, axis=0)
        boxes = np.concatenate([centres - distances[:, :2], centres + distances[:, 2:]], axis=1)
        keep = scores >= threshold
        scores_all.append(scores[keep])
        boxes_all.append(boxes[keep])
    return np.concatenate(scores_all), np.concatenate(boxes_all)


def detect_faces_onnx(
    image: np.ndarray, detector_path: str, device: str = "cpu"
) -> list[tuple[float, float, float, float]]:
    """(H, W, 3) uint8 RGB -> face boxes (x0, y0, x1, y1), largest first (SCRFD det_10g.onnx); device: cpu | cuda:N."""
    session = _session(detector_path, device)
    height, width = image.shape[:2]
    if height / width > 1.0:
        new_h, new_w = DET_SIZE, int(DET_SIZE / (height / width))
    else:
        new_w, new_h = DET_SIZE, int(DET_SIZE * (height / width))
    det_scale = new_h / height
    canvas = np.zeros((DET_SIZE, DET_SIZE, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
    outputs = session.run(None, {session.get_inputs()[0].name: blob})
    if len(outputs) != 3 * len(STRIDES):
        raise CheckpointError(
            f"{detector_path} is not insightface's det_10g.onnx (it has {len(outputs)} outputs, expected 9)"
        )
    outputs = [o[0] if o.ndim == 3 else o for o in outputs]
    scores, boxes = decode_scrfd(outputs)
    if scores.size == 0:
        return []
    boxes = boxes / det_scale
    keep = nms(boxes, scores)
    faces = [tuple(float(v) for v in boxes[i]) for i in keep]
    faces.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
    return faces


def landmarks_106(
    image: np.ndarray, box: tuple[float, float, float, float], model_path: str, device: str = "cpu"
) -> np.ndarray:
    """(H, W, 3) uint8 RGB + face box -> (106, 2) landmarks in image pixels (insightface 2d106det.onnx)."""
    session = _session(model_path, device)
    size = int(session.get_inputs()[0].shape[2]) if isinstance(session.get_inputs()[0].shape[2], int) else 192
    x0, y0, x1, y1 = box
    scale = size / (max(x1 - x0, y1 - y0) * 1.5)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    forward = np.array([[scale, 0.0, size / 2 - cx * scale], [0.0, scale, size / 2 - cy * scale]])
    patch = cv2.warpAffine(image, forward, (size, size), borderValue=0.0)
    blob = patch.astype(np.float32).transpose(2, 0, 1)[None]  # this model normalises inside (mean 0, std 1)
    pred = session.run(None, {session.get_inputs()[0].name: blob})[0][0].reshape(-1, 2)[-106:].astype(np.float64)
    pred = (pred + 1.0) * (size // 2)
    back = cv2.invertAffineTransform(forward)
    return pred @ back[:, :2].T + back[:, 2]


def liveportrait_crop_matrix(landmarks: np.ndarray, scale: float = 1.0, dsize: int = CROP_DSIZE) -> np.ndarray:
    """106 landmarks -> (2, 3) map from the original image to the dsize^2 crop (LivePortrait crop_image, rotated)."""
    pts = landmarks.astype(np.float32)
    eye_left = pts[[33, 35, 40, 39]].mean(axis=0)
    eye_right = pts[[87, 89, 94, 93]].mean(axis=0)
    eye = (eye_left + eye_right) / 2
    lip = (pts[52] + pts[61]) / 2
    up = lip - eye
    length = float(np.linalg.norm(up))
    uy = np.array([0.0, 1.0], np.float32) if length <= 1e-3 else (up / length).astype(np.float32)
    ux = np.array([uy[1], -uy[0]], np.float32)
    angle = math.acos(float(ux[0])) * (-1.0 if ux[1] < 0 else 1.0)
    rot = np.stack([ux, uy])
    centre0 = pts.mean(axis=0)
    rpts = (pts - centre0) @ rot.T
    low, high = rpts.min(axis=0), rpts.max(axis=0)
    mid = (low + high) / 2
    size = float((high - low).max()) * CROP_SCALE * scale
    centre = centre0 + ux * mid[0] + uy * mid[1] + ux * (CROP_VX * size) + uy * (CROP_VY * size)
    s = dsize / size
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = float(centre[0]), float(centre[1])
    half = dsize / 2
    return np.array(
        [[s * cos, s * sin, half - s * (cos * cx + sin * cy)], [-s * sin, s * cos, half - s * (-sin * cx + cos * cy)]],
        np.float64,
    )


def crop_face_onnx(
    image: np.ndarray, files: dict[str, Path], face_index: int = 0, scale: float = 1.0, device=None
) -> FaceCrop:
    """(H, W, 3) uint8 RGB -> FaceCrop by LivePortrait's insightface crop (files: pipeline.weights.crop_model_files)."""
    where = "cpu" if device is None else str(device)
    boxes = detect_faces_onnx(image, str(files["detector"]), where)
    if not boxes:
        raise ImageError(
            "no face found in the source image; use a portrait with a clearly visible, roughly frontal face"
        )
    if not 0 <= face_index < len(boxes):
        raise ImageError(
            f"face_index={face_index} asked for, but the source image has {len(boxes)} face(s) (0 = largest)"
        )
    box = boxes[face_index]
    landmarks = landmarks_106(image, box, str(files["landmark106"]), where)
    to_crop = liveportrait_crop_matrix(landmarks, scale)
    crop512 = cv2.warpAffine(image, to_crop, (CROP_DSIZE, CROP_DSIZE), flags=cv2.INTER_LINEAR)
    crop = cv2.resize(crop512, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
    matrix = cv2.invertAffineTransform(to_crop)  # 512 crop pixel -> original pixel: exactly a rendered frame's grid
    return FaceCrop(image=crop, matrix=matrix, landmarks=landmarks, face_box=box, num_faces=len(boxes))


@dataclass(frozen=True)
class InsightFaceCrop:
    """LivePortrait's crop (`crop=insightface`): the two ONNX models under `checkpoint_dir`, a rotated square."""

    checkpoint_dir: str  # holds insightface/models/buffalo_l/{det_10g,2d106det}.onnx
    scale: float  # multiplies LivePortrait's crop scale (2.3)
    face_index: int  # faces sorted by size: 0 = largest
    device: str  # where the ONNX models run: auto | cpu | cuda | cuda:N (the pipeline's device)
    uses_crop_models = True

    def __post_init__(self) -> None:
        check_crop_settings(self.scale, self.face_index)

    def __call__(self, image: np.ndarray) -> FaceCrop:
        """(H, W, 3) uint8 RGB -> FaceCrop of the `face_index`-th largest face."""
        files = crop_model_files(self.checkpoint_dir)
        return crop_face_onnx(image, files, self.face_index, self.scale, device=resolve_device(self.device))

    def check(self) -> None:
        """CheckpointError naming the ONNX files when they are missing."""
        crop_model_files(self.checkpoint_dir)
