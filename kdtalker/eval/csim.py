"""CSIM: cosine similarity of ArcFace identity embeddings between the reference image and generated frames.

Faces are aligned to ArcFace's 112x112 five-point template (eye centres, nose tip, mouth corners, here
taken from dlib's 68 landmarks) with a similarity transform, fed as (1,3,112,112) RGB scaled to
(x - 127.5) / 127.5 (insightface's ArcFaceONNX convention) to an ONNX recognition model run by
onnxruntime; CSIM of a video = mean over frames of cos(e_ref, e_frame).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from kdtalker.errors import CheckpointError

ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """(68,2) dlib landmarks -> (5,2): left eye centre, right eye centre, nose tip, left and right mouth corners."""
    lm = np.asarray(landmarks68, np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def align_face(image_rgb: np.ndarray, points5: np.ndarray, size: int = 112) -> np.ndarray:
    """(H,W,3) RGB + (5,2) points -> (size,size,3) RGB aligned to the ArcFace template (similarity transform)."""
    dst = ARCFACE_TEMPLATE * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(points5, np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("could not fit the face alignment transform")
    return cv2.warpAffine(image_rgb, matrix, (size, size), borderValue=0.0)


class ArcFace:
    """An ArcFace ONNX model through onnxruntime: (N,112,112,3) uint8 RGB aligned faces -> (N,D) embeddings."""

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"csim: ArcFace model {path} not found; it needs an ArcFace recognition ONNX model "
                "(e.g. insightface buffalo_l w600k_r50.onnx) - set csim.arcface_path in configs/evaluate.yaml"
            )
        try:
            self.session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise CheckpointError(
                f"csim: {path} could not be loaded as an ONNX model ({exc}); download it again"
            ) from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.size = int(inp.shape[2]) if isinstance(inp.shape[2], int) else 112

    def embed(self, faces_rgb: np.ndarray) -> np.ndarray:
        """(N,s,s,3) uint8 RGB aligned faces -> (N,D) float64 embeddings (one face per run: fixed-batch models work)."""
        x = (np.asarray(faces_rgb, np.float32) - 127.5) / 127.5
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return np.concatenate(
            [self.session.run(None, {self.input_name: x[i : i + 1]})[0] for i in range(len(x))]
        ).astype(np.float64)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(D,) or (N,D) against (M,D) -> cosine similarities (broadcast over rows)."""
    a = np.atleast_2d(a)
    b = np.atleast_2d(b)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def csim(reference_embedding: np.ndarray, frame_embeddings: np.ndarray) -> float:
    """(D,) reference, (N,D) frames -> mean cosine similarity."""
    return float(np.mean(cosine_similarity(reference_embedding, frame_embeddings)))
