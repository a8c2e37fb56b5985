"""Frechet distance: closed-form answers and pytorch-fid's sqrtm computation; the Inception feature path against an
independent functional re-statement of pytorch-fid's FID Inception-v3 on fixture weights; the real-frame crop."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg
from test_eval_support import deep_fixture_weights

from kdtalker.errors import CheckpointError
from kdtalker.eval.fid import (
    FIDInceptionV3,
    fid_from_features,
    frechet_distance,
    image_features,
    resized_frame_matrix,
    warp_frames,
)
from kdtalker.eval.weights import load_inception


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_1d_closed_form(method):
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]]), method
    ) == pytest.approx(9 + 1)


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_commuting_covariances(method):
    # Same eigenvectors: |dmu|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    rot, _ = np.linalg.qr(np.random.RandomState(0).randn(5, 5))
    a, b = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([4.0, 1.0, 0.5, 9.0, 2.0])
    mu1, mu2 = np.arange(5.0), np.arange(5.0)[::-1]
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, rot @ np.diag(a) @ rot.T, mu2, rot @ np.diag(b) @ rot.T, method)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_non_commuting_matches_sqrtm():
    rs = np.random.RandomState(4)
    a, b = rs.randn(6, 6), rs.randn(6, 6)
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu = rs.randn(6)
    assert frechet_distance(mu, s1, -mu, s2, "eigh") == pytest.approx(
        frechet_distance(mu, s1, -mu, s2, "sqrtm"), rel=1e-9
    )


def test_fid_of_identical_and_shifted_feature_sets():
    feats = np.random.RandomState(1).randn(200, 16)
    assert fid_from_features(feats, feats) == pytest.approx(0.0, abs=1e-8)
    assert fid_from_features(feats, feats, "sqrtm") == pytest.approx(0.0, abs=1e-8)
    shift = np.linspace(-1, 1, 16)
    assert fid_from_features(feats, feats + shift) == pytest.approx(np.sum(shift**2), rel=1e-8)


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    """Fixture weights saved as the official file, loaded through load_inception, and 2 small random frames."""
    state = deep_fixture_weights(FIDInceptionV3(), "inception")
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    frames = np.random.RandomState(7).randint(0, 256, (2, 37, 53, 3)).astype(np.uint8)
    return state, load_inception(path), frames


def test_inception_smaller_feature_blocks(inception):
    _, model, frames = inception
    # pytorch-fid's smaller feature blocks: the 64-d one is the first pooled stem output
    early = image_features(model, frames, dims=64)
    assert early.shape == (2, 64)
    with torch.inference_mode():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        stem = model.Conv2d_1a_3x3(2 * torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear") - 1)
        stem = torch.nn.functional.max_pool2d(model.Conv2d_2b_3x3(model.Conv2d_2a_3x3(stem)), 3, 2)
    np.testing.assert_allclose(early, stem.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="dims"):
        image_features(model, frames, dims=100)


def test_inception_loader_errors(tmp_path):
    with pytest.raises(CheckpointError, match="pt_inception"):
        load_inception(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_inception({"fc.weight": torch.zeros(1008, 2048)})


def _random_stats(seed: int, dims: int = 64, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    feats = np.random.RandomState(seed).randn(n, dims) @ np.random.RandomState(seed + 100).randn(dims, dims) / 8
    return feats.mean(0) + seed, np.cov(feats, rowvar=False)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_known_answer_against_scipy(method):
    (mu1, s1), (mu2, s2) = _random_stats(1), _random_stats(2)
    # pytorch-fid's formula written out here with scipy directly
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2, method) == pytest.approx(expected, rel=1e-6)


def test_sqrtm_is_the_default():
    # eigh and sqrtm differ here in the last digits (1e-15 .. 1e-14): the default must be sqrtm bit for bit
    (mu1, s1), (mu2, s2) = _random_stats(3, dims=8), _random_stats(4, dims=8)
    assert frechet_distance(mu1, s1, mu2, s2) == frechet_distance(mu1, s1, mu2, s2, "sqrtm")
    assert frechet_distance(mu1, s1, mu2, s2) != frechet_distance(mu1, s1, mu2, s2, "eigh")
    feats = np.random.RandomState(5).randn(40, 8)
    assert fid_from_features(feats, feats[::-1] * 2) == fid_from_features(feats, feats[::-1] * 2, "sqrtm")


def test_sqrtm_retries_with_eps_when_not_finite():
    # sqrtm([[0, 1], [0, 0]]) has no square root (scipy returns inf): pytorch-fid adds 1e-6 I to both covariances,
    # giving the upper-triangular a[[1, 1/a], [0, 1]] with a = 1e-6 (1 + 1e-6), whose root has trace 2 sqrt(a)
    got = frechet_distance(np.zeros(2), np.array([[0.0, 1.0], [0.0, 0.0]]), np.zeros(2), np.eye(2), "sqrtm")
    assert got == pytest.approx(2 - 4 * np.sqrt(1e-6 * (1 + 1e-6)), rel=1e-12)


def test_sqrtm_imaginary_component_raises():
    # sqrtm(diag(-1, 1)) = diag(i, 1): an imaginary diagonal entry of 1 > 1e-3, as pytorch-fid refuses
    with pytest.raises(ValueError, match="Imaginary component"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([-1.0, 1.0]), "sqrtm")
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), "svd")


# --- an independent statement of pytorch-fid's FID Inception v3, from the state dict alone ---


def _basic(state, name, x, stride=1, pad=True):
    """<name>.conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU; stride-1 convs padded by k//2."""
    w = state[f"{name}.conv.weight"]
    padding = (w.shape[2] // 2, w.shape[3] // 2) if pad and stride == 1 else (0, 0)
    y = F.conv2d(x, w, stride=stride, padding=padding)
    mean, var = state[f"{name}.bn.running_mean"], state[f"{name}.bn.running_var"]
    scale = state[f"{name}.bn.weight"] / torch.sqrt(var + 1e-3)
    return torch.relu((y - mean[:, None, None]) * scale[:, None, None] + state[f"{name}.bn.bias"][:, None, None])


def _chain(state, block, names, x):
    for n in names:
        x = _basic(state, f"{block}.{n}", x)
    return x


def _avg(x):
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


def _block_a(state, b, x):
    return torch.cat(
        [
            _basic(state, f"{b}.branch1x1", x),
            _chain(state, b, ["branch5x5_1", "branch5x5_2"], x),
            _chain(state, b, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], x),
            _basic(state, f"{b}.branch_pool", _avg(x)),
        ],
        1,
    )


def _block_b(state, b, x):
    dbl = _chain(state, b, ["branch3x3dbl_1", "branch3x3dbl_2"], x)
    return torch.cat(
        [
            _basic(state, f"{b}.branch3x3", x, stride=2),
            _basic(state, f"{b}.branch3x3dbl_3", dbl, stride=2),
            F.max_pool2d(x, 3, 2),
        ],
        1,
    )


def _block_c(state, b, x):
    dbl = [f"branch7x7dbl_{k}" for k in range(1, 6)]
    return torch.cat(
        [
            _basic(state, f"{b}.branch1x1", x),
            _chain(state, b, ["branch7x7_1", "branch7x7_2", "branch7x7_3"], x),
            _chain(state, b, dbl, x),
            _basic(state, f"{b}.branch_pool", _avg(x)),
        ],
        1,
    )


def _block_d(state, b, x):
    b7 = _chain(state, b, ["branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3"], x)
    return torch.cat(
        [
            _basic(state, f"{b}.branch3x3_2", _basic(state, f"{b}.branch3x3_1", x), stride=2),
            _basic(state, f"{b}.branch7x7x3_4", b7, stride=2),
            F.max_pool2d(x, 3, 2),
        ],
        1,
    )


def _block_e(state, b, x, pool):
    b3 = _basic(state, f"{b}.branch3x3_1", x)
    dbl = _chain(state, b, ["branch3x3dbl_1", "branch3x3dbl_2"], x)
    return torch.cat(
        [
            _basic(state, f"{b}.branch1x1", x),
            _basic(state, f"{b}.branch3x3_2a", b3),
            _basic(state, f"{b}.branch3x3_2b", b3),
            _basic(state, f"{b}.branch3x3dbl_3a", dbl),
            _basic(state, f"{b}.branch3x3dbl_3b", dbl),
            _basic(state, f"{b}.branch_pool", pool(x)),
        ],
        1,
    )


def _reference_features(state, frames_uint8):
    x = torch.from_numpy(frames_uint8).permute(0, 3, 1, 2).to(state["Conv2d_1a_3x3.conv.weight"].dtype) / 255.0
    x = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    x = _basic(state, "Conv2d_1a_3x3", x, stride=2)
    x = _basic(state, "Conv2d_2a_3x3", x, pad=False)
    x = F.max_pool2d(_basic(state, "Conv2d_2b_3x3", x), 3, 2)
    x = _basic(state, "Conv2d_4a_3x3", _basic(state, "Conv2d_3b_1x1", x), pad=False)
    x = F.max_pool2d(x, 3, 2)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        x = _block_a(state, name, x)
    x = _block_b(state, "Mixed_6a", x)
    for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        x = _block_c(state, name, x)
    x = _block_d(state, "Mixed_7a", x)
    x = _block_e(state, "Mixed_7b", x, _avg)  # FIDInceptionE_1
    x = _block_e(state, "Mixed_7c", x, lambda t: F.max_pool2d(t, 3, 1, 1))  # FIDInceptionE_2
    return x.mean(dim=(2, 3)).numpy()


def test_inception_features_match_the_published_layer_layout(inception):
    state, model, frames = inception
    got = image_features(model, frames)
    # The reference runs (in float32) from the state dict alone, so what is left is float32 rounding: measured
    # 4.4e-6 at most (features 0..11). Per-element relative error is no measure here - ReLU makes some features
    # tiny (4e-5), where the same absolute error is 10 %. A wrong pool branch (E_2 averaging, or A/C/E_1 counting
    # the padding) moves features by 0.6 to 2.4.
    expected = _reference_features(state, frames)
    assert got.shape == (2, 2048) and not np.allclose(got[0], got[1], atol=1e-3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_real_frame_crop_geometry():
    # A 512 frame map of box (100, 50)-(356, 306) (scale 0.5): warping to 512 and to 256 samples the same region.
    rs = np.random.RandomState(8)
    image = cv2.GaussianBlur(rs.randint(0, 256, (400, 480, 3)).astype(np.uint8), (0, 0), 3)
    matrix = np.array([[0.5, 0.0, 100 + 0.25 - 0.5], [0.0, 0.5, 50 + 0.25 - 0.5]])
    direct = warp_frames(image[None], resized_frame_matrix(matrix, 256, 256), 256, 256)[0]
    # at 256 the pixel grid is exactly the box's pixels: a plain cut
    np.testing.assert_array_equal(direct, image[50:306, 100:356])
    np.testing.assert_array_equal(resized_frame_matrix(matrix, 512, 512), matrix)
