"""FID: the Frechet distance between Gaussians fitted to Inception pool features of two image sets.

The network is pytorch-fid's FID Inception v3 (the TF 2015-12-05 graph ported to PyTorch), written
here without torchvision with torchvision's key names so that `pt_inception-2015-12-05-6726825d.pth`
loads: BasicConv2d = conv (no bias) + BatchNorm(eps 1e-3) + ReLU; the FID variants of blocks A, C and
E average-pool without counting padding, and the last E block max-pools its pool branch.
Input (B,3,H,W) RGB in [0,1] is resized to 299x299 (bilinear, align_corners=False) and scaled to
[-1,1]; the output is the 2048-d average-pooled feature. Any other extractor with the same
`features(images) -> (B,D)` shape can be configured instead.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

FEATURE_DIMS = (64, 192, 768, 2048)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg3(x)),
            ],
            1,
        )


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, 3, 2),
            ],
            1,
        )


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        dbl = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            dbl = layer(dbl)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                dbl,
                self.branch_pool(_avg3(x)),
            ],
            1,
        )


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """Block E; `max_pool` selects the pool branch of the last block (FID variant E_2) instead of avg (E_1)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pool = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg3(x)
        return torch.cat(
            [
                self.branch1x1(x),
                torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1),
                torch.cat([self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl)], 1),
                self.branch_pool(pool),
            ],
            1,
        )


class FIDInceptionV3(nn.Module):
    """(B,3,H,W) RGB in [0,1] -> (B,2048) pool features; keys as torchvision's Inception3 (+ fc, 1008 classes)."""

    def __init__(self, num_classes: int = 1008):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, num_classes)  # in the checkpoint; not used for FID

    def forward(self, x: torch.Tensor, dims: int = 2048) -> torch.Tensor:
        """dims picks the feature block as pytorch-fid's --dims: 64 (1st pool), 192 (2nd pool), 768 (Mixed_6e), 2048."""
        if dims not in FEATURE_DIMS:
            raise ValueError(f"dims must be one of {FEATURE_DIMS}, got {dims}")
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, 2)
        if dims == 64:
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, 2)
        if dims == 192:
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = getattr(self, name)(x)
        if dims == 768:
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


@torch.inference_mode()
def image_features(model: nn.Module, frames_rgb: np.ndarray, batch_size: int = 32, **kwargs) -> np.ndarray:
    """(N,H,W,3) uint8 RGB -> (N,D) float64 features of `model` (input (B,3,H,W) in [0,1]; kwargs go to its forward)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(frames_rgb), batch_size):
        x = torch.from_numpy(np.array(frames_rgb[i : i + batch_size])).to(device).permute(0, 3, 1, 2).float() / 255.0
        out.append(model(x, **kwargs).double().cpu().numpy())
    return np.concatenate(out, 0)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,D) features -> mean (D,), covariance (D,D) (unbiased, as pytorch-fid)."""
    f = np.asarray(features, np.float64)
    if len(f) < 2:
        raise ValueError(f"FID needs at least 2 feature vectors per set, got {len(f)}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


FID_DISTANCES = ("sqrtm", "eigh")


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for PSD S1, S2 = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)) (symmetric, via eigh)."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    return float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None))))


def _trace_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    """Tr(sqrtm(S1 S2)) exactly as pytorch-fid's calculate_frechet_distance computes it."""
    with warnings.catch_warnings():
        # scipy warns about (nearly) singular products; the eps retry and the imaginary check below decide instead
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"Imaginary component {np.max(np.abs(covmean.imag))} in sqrtm(S1 S2): a covariance is not "
                "positive semi-definite (too few feature vectors for the dimension?)"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, method: str = "sqrtm", eps: float = 1e-6
) -> float:
    """mu (D,), sigma (D,D) of two Gaussians -> ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)).

    method "sqrtm" (default): pytorch-fid's computation - scipy.linalg.sqrtm(S1 S2); if that is not finite, eps*I
    is added to both covariances and it is retried; a complex result whose diagonal has an imaginary part
    above 1e-3 raises ValueError, otherwise its real part is used. This is what published FIDs are.
    method "eigh": the trace of the square root from a symmetric eigendecomposition - the same quantity for PSD
    covariances, ~50x faster for 2048-d features and free of sqrtm's complex round-off (no eps retry, no check).
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    if method == "sqrtm":
        tr_covmean = _trace_sqrtm(sigma1, sigma2, eps)
    elif method == "eigh":
        tr_covmean = _trace_sqrt_product(sigma1, sigma2)
    else:
        raise ValueError(f"method must be one of {FID_DISTANCES}, got {method!r}")
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid_from_features(feat_a: np.ndarray, feat_b: np.ndarray, method: str = "sqrtm") -> float:
    """(N,D), (M,D) features of two sets -> FID (method: "sqrtm" as pytorch-fid, or "eigh")."""
    return frechet_distance(*gaussian_stats(feat_a), *gaussian_stats(feat_b), method=method)


def resized_frame_matrix(matrix: np.ndarray, width: int, height: int, frame_size: int = 512) -> np.ndarray:
    """(2,3) map from a frame_size^2 frame's pixel to the image -> the same map for a width x height frame.

    Pixel centres correspond as in cv2.resize: u_512 = (u + 0.5) * frame_size / width - 0.5 (same for v).
    """
    sx, sy = frame_size / width, frame_size / height
    to_512 = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return np.asarray(matrix, np.float64) @ to_512


def warp_frames(frames_rgb: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N,H,W,3) frames + (2,3) map from an output pixel to the frame -> (N,height,width,3) crops (bilinear)."""
    # WARP_INVERSE_MAP: `matrix` already maps output pixels to input pixels, as FaceCrop.matrix does.
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return np.stack([cv2.warpAffine(f, matrix, (width, height), flags=flags, borderValue=0.0) for f in frames_rgb])
