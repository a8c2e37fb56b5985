"""Face detection (dlib HOG + 68 landmarks) and KDTalker's source crop.

The official inference crops the source with SadTalker's dlib "Croper" (FFHQ-style alignment quad,
`xsize=512`, `still=False`) and resizes the result to 256x256. We reproduce that geometry exactly:

1. eye centres e_l, e_r (means of landmarks 36-41, 42-47), e = (e_l + e_r)/2, mouth m = mean of landmarks 48, 54;
   u = e_r - e_l (eye to eye), v = m - e (eye to mouth).
2. x = u - (-v_y, v_x) rotated, normalised, scaled by max(2.0 |u|, 1.8 |v|) (times `scale`, 1 = official);
   y = x rotated by 90 degrees; centre c = e + 0.1 v; quad = c -/+ x -/+ y; qsize = 2 |x|.
3. shrink = floor(qsize / 1024): when > 1 the image is first resized by 1/shrink (cv2 bilinear).
4. border = max(rint(0.1 qsize), 3); a border-padded, image-clamped box around the quad; then the
   axis-aligned extent of the quad (+0.5, clamped to the image; the bottom edge is clamped to the
   image *width*, an official quirk) inside that box is cut out and resized to 256x256 (cv2 bilinear).

The quad's rotation is not applied: the crop is axis-aligned, and a crop clamped at the image edge is
not square (the resize to 256x256 then stretches it, as officially). Where the official code takes
dlib's first detection we take the largest face (`face_index` picks another, by decreasing size).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from kdtalker.errors import ConfigError, ImageError

CROP_SIZE = 256
ALIGN_SIZE = 512  # the official `xsize`: only decides when a big image is downscaled before cropping
MATRIX_SIZE = 512  # FaceCrop.matrix maps a pixel of a frame of this size (LivePortrait's rendered frames)
DETECT_MAX_SIDE = 2048  # larger images are searched on a downscaled copy (dlib's pyramid grows with the area)


@dataclass(frozen=True)
class FaceCrop:
    """A source crop: `image` (256, 256, 3) uint8 RGB; `matrix` (2, 3) maps a pixel of a 512x512 rendered frame
    (index coordinates) to the original image, so the same region rendered at 512 can be pasted back."""

    image: np.ndarray
    matrix: np.ndarray
    landmarks: np.ndarray  # (N, 2) float64 in original-image pixels (68 for dlib, 106 for the ONNX path)
    face_box: tuple[float, float, float, float]
    num_faces: int

    def frame_matrix(self, frame_size: int) -> np.ndarray:
        """(2, 3) map from a pixel of a frame_size^2 rendered frame (Face-vid2vid: 256) to the original image."""
        if frame_size == MATRIX_SIZE:
            return self.matrix
        s = MATRIX_SIZE / frame_size  # pixel centres: u_512 = (u + 0.5) s - 0.5
        return self.matrix @ np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5], [0.0, 0.0, 1.0]])

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Axis-aligned extent (x0, y0, x1, y1) of the crop in the original image (pixel edges)."""
        corners = frame_corners(self.matrix)
        return (
            float(corners[:, 0].min()),
            float(corners[:, 1].min()),
            float(corners[:, 0].max()),
            float(corners[:, 1].max()),
        )


def box_matrix(box: tuple[float, float, float, float], frame_size: int = 512) -> np.ndarray:
    """(2, 3) map from a frame_size^2 frame's pixel index to the original image for a box (x0, y0, x1, y1).

    A resize maps pixel centres: x = x0 + (u + 0.5) * w / S - 0.5 (the convention of cv2.resize).
    """
    x0, y0, x1, y1 = box
    sx, sy = (x1 - x0) / frame_size, (y1 - y0) / frame_size
    return np.array([[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5]])


def frame_corners(matrix: np.ndarray, frame_size: int = 512) -> np.ndarray:
    """The four outer corners (4, 2) of a frame_size^2 frame mapped into the original image (pixel edges)."""
    edge = np.array(
        [[-0.5, -0.5], [frame_size - 0.5, -0.5], [frame_size - 0.5, frame_size - 0.5], [-0.5, frame_size - 0.5]]
    )
    return edge @ matrix[:, :2].T + matrix[:, 2] + 0.5


def dlib_models_dir() -> Path:
    """Folder of the dlib models shipped by the face-recognition-models package (not imported: needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImageError("the face-recognition-models package is not installed; run `pip install -r requirements.txt`")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@lru_cache(maxsize=2)
def _dlib_models(predictor_path: str):
    import dlib

    if not Path(predictor_path).is_file():
        raise ImageError(
            f"dlib landmark model {predictor_path} not found; reinstall face-recognition-models "
            "(`pip install -r requirements.txt`) or set crop.predictor_path"
        )
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor_path)


def detect_faces_dlib(
    image: np.ndarray, predictor_path: str | None = None, upsample: int = 1
) -> list[tuple[tuple[float, float, float, float], np.ndarray]]:
    """(H, W, 3) uint8 RGB -> [(face box x0, y0, x1, y1, 68 landmarks (68, 2))], largest face first."""
    import dlib

    path = predictor_path or str(dlib_models_dir() / "shape_predictor_68_face_landmarks.dat")
    detector, predictor = _dlib_models(path)
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    factor = max(height, width) / DETECT_MAX_SIDE
    if factor > 1:
        small = cv2.resize(image, (round(width / factor), round(height / factor)), interpolation=cv2.INTER_AREA)
        rects = [
            dlib.rectangle(*(round(v * factor) for v in (r.left(), r.top(), r.right(), r.bottom())))
            for r in detector(small, upsample)
        ]
    else:
        rects = list(detector(image, upsample))
    faces = []
    for rect in rects:
        shape = predictor(image, rect)
        landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        faces.append(((float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom())), landmarks))
    faces.sort(key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]), reverse=True)
    return faces


def official_crop_box(
    landmarks: np.ndarray, width: int, height: int, scale: float = 1.0
) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """68 landmarks -> (resized size (w, h), crop box (x0, y0, x1, y1) in that resized image), as SadTalker's Croper."""
    eye_left = landmarks[36:42].mean(axis=0)
    eye_right = landmarks[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (landmarks[48] + landmarks[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x = x / np.hypot(*x)
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) * scale
    y = np.array([-x[1], x[0]])
    centre = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])
    qsize = np.hypot(*x) * 2

    shrink = int(np.floor(qsize / ALIGN_SIZE * 0.5))
    if shrink > 1:
        size = (int(np.rint(width / shrink)), int(np.rint(height / shrink)))
        quad = quad / shrink
        qsize = qsize / shrink
    else:
        size = (width, height)

    border = max(int(np.rint(qsize * 0.1)), 3)
    outer = (
        max(int(np.floor(quad[:, 0].min())) - border, 0),
        max(int(np.floor(quad[:, 1].min())) - border, 0),
        min(int(np.ceil(quad[:, 0].max())) + border, size[0]),
        min(int(np.ceil(quad[:, 1].max())) + border, size[1]),
    )
    quad = quad - np.array(outer[:2], dtype=np.float64)
    q = (quad + 0.5).reshape(-1)
    left = int(max(min(q[0], q[2]), 0))
    top = int(max(min(q[1], q[7]), 0))
    right = int(min(max(q[4], q[6]), size[0]))
    bottom = int(min(max(q[3], q[5]), size[0]))  # clamped to the width: the official quirk
    # Python slicing of the outer crop clips the inner box to it.
    x0, y0 = outer[0] + min(left, outer[2] - outer[0]), outer[1] + min(top, outer[3] - outer[1])
    x1 = outer[0] + min(max(right, left), outer[2] - outer[0])
    y1 = outer[1] + min(max(bottom, top), outer[3] - outer[1])
    return size, (x0, y0, x1, y1)


def crop_face(
    image: np.ndarray, face_index: int = 0, scale: float = 1.0, predictor_path: str | None = None
) -> FaceCrop:
    """(H, W, 3) uint8 RGB -> FaceCrop of the `face_index`-th largest face (0 = largest), as the official crop."""
    if not scale > 0:
        raise ImageError(f"crop scale must be positive, got {scale}")
    faces = detect_faces_dlib(image, predictor_path)
    if not faces:
        raise ImageError(
            "no face found in the source image; use a portrait with a clearly visible, roughly frontal face"
        )
    if not 0 <= face_index < len(faces):
        raise ImageError(
            f"face_index={face_index} asked for, but the source image has {len(faces)} face(s) (0 = largest)"
        )
    face_box, landmarks = faces[face_index]
    height, width = image.shape[:2]
    size, (x0, y0, x1, y1) = official_crop_box(landmarks, width, height, scale)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ImageError(
            "the face lies at the very edge of the source image; use an image with the whole face inside it"
        )
    resized = image if size == (width, height) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    crop = cv2.resize(
        np.ascontiguousarray(resized[y0:y1, x0:x1]), (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR
    )
    fx, fy = width / size[0], height / size[1]
    matrix = box_matrix((x0 * fx, y0 * fy, x1 * fx, y1 * fy))
    return FaceCrop(image=crop, matrix=matrix, landmarks=landmarks, face_box=face_box, num_faces=len(faces))


@runtime_checkable
class FaceCropper(Protocol):
    """A crop method as the crop config group builds it (`crop=dlib | insightface`): image -> FaceCrop."""

    uses_crop_models: bool  # whether it reads the optional insightface ONNX files of the checkpoint folder

    def __call__(self, image: np.ndarray) -> FaceCrop:
        """(H, W, 3) uint8 RGB -> the 256x256 source crop."""
        ...

    def check(self) -> None:
        """CheckpointError when a file the method needs is missing (before any work)."""
        ...


def check_crop_settings(scale: float, face_index: int) -> None:
    """ConfigError for a crop scale that is not positive or a negative face index."""
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0):
        raise ConfigError(f"crop.scale={scale!r} is not valid: crop.scale takes a positive number")
    if not (isinstance(face_index, int) and not isinstance(face_index, bool) and face_index >= 0):
        raise ConfigError(f"crop.face_index={face_index!r} is not valid: crop.face_index takes a whole number >= 0")


@dataclass(frozen=True)
class DlibCrop:
    """The official crop (`crop=dlib`): dlib HOG detector + 68 landmarks, SadTalker's alignment box, 256x256."""

    scale: float  # multiplies the official crop size (> 1 shows more around the face)
    face_index: int  # faces sorted by size: 0 = largest
    predictor_path: str | None  # None: the 68-landmark model of face-recognition-models
    uses_crop_models = False

    def __post_init__(self) -> None:
        check_crop_settings(self.scale, self.face_index)

    def __call__(self, image: np.ndarray) -> FaceCrop:
        """(H, W, 3) uint8 RGB -> FaceCrop of the `face_index`-th largest face."""
        return crop_face(image, face_index=self.face_index, scale=self.scale, predictor_path=self.predictor_path)

    def check(self) -> None:
        """Nothing to check up front: the landmark model ships with face-recognition-models (read on first use)."""
