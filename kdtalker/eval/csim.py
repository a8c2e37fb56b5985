"""CSIM: cosine similarity of ArcFace identity embeddings between the reference image and generated frames.

The model the tables assume is insightface's buffalo_l recognition model `w600k_r50.onnx` (ArcFace R50 trained
on WebFace600K). Faces are aligned as insightface does (face_align.norm_crop): the least-squares similarity
transform (rotation, uniform scale, translation; never a reflection - Umeyama 1991) of five points onto ArcFace's
112x112 template, then a bilinear warp with black borders. The five points (eye centres, nose tip, mouth corners)
come from dlib's 68 landmarks (`csim.landmarks: dlib`, the only choice): an approximation of the 5-point
detectors (RetinaFace, SCRFD) that insightface uses - the points are derived from contour landmarks (eye centre =
mean of the six eye-contour points) instead of being regressed directly, so they can differ by a few pixels. The
aligned face goes in as (1,3,112,112) RGB scaled to (x - 127.5) / 127.5 (insightface's ArcFaceONNX convention)
through onnxruntime; CSIM of a video = mean over frames of cos(e_ref, e_frame).
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
    np.float32,  # insightface's arcface_dst is float32: the same rounded values, then float64 arithmetic
).astype(np.float64)


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """(68,2) dlib landmarks -> (5,2): left eye centre, right eye centre, nose tip, left and right mouth corners."""
    lm = np.asarray(landmarks68, np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


LANDMARKS = ("dlib",)


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(N,2) source and (N,2) destination points -> (2,3) similarity [s R | t] minimising sum |s R src + t - dst|^2.

    Umeyama (1991): with centred points and the cross-covariance C = dst_c^T src_c / N = U S V^T, R = U D V^T with
    D = diag(1, sign) where sign = -1 only if det(U) det(V) < 0 (so R is a rotation, never a reflection), scale
    s = tr(S D) / var(src), t = mean(dst) - s R mean(src).
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (N,2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = float((src_c**2).sum()) / len(src)
    if var_src <= 0:
        raise ValueError("the source points coincide: no similarity transform is defined")
    u, sing, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.array([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rotation = (u * d) @ vt
    scale = float((sing * d).sum()) / var_src
    return np.hstack([scale * rotation, (mu_dst - scale * rotation @ mu_src)[:, None]])


def align_face(image_rgb: np.ndarray, points5: np.ndarray, size: int = 112) -> np.ndarray:
    """(H,W,3) RGB + (5,2) points -> (size,size,3) RGB aligned to the ArcFace template (scaled by size/112)."""
    matrix = umeyama_similarity(points5, ARCFACE_TEMPLATE * (size / 112.0))
    return cv2.warpAffine(image_rgb, matrix, (size, size), borderValue=0.0)


class ArcFace:
    """An ArcFace ONNX model through onnxruntime: (N,112,112,3) uint8 RGB aligned faces -> (N,D) embeddings."""

    def __init__(self, path: str | os.PathLike, providers: list[str | tuple[str, dict]] | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"csim: ArcFace model {path} not found; the tables assume insightface's buffalo_l recognition model "
                "w600k_r50.onnx (in buffalo_l.zip of the insightface releases) - set weights.arcface in "
                "kdtalker/configs/evaluate.yaml"
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
