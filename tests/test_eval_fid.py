"""Frechet distance on Gaussians with closed-form answers; FID through the Inception loader with fixture weights."""

import numpy as np
import pytest
import torch
from test_eval_support import deep_fixture_weights

from kdtalker.errors import CheckpointError
from kdtalker.eval.fid import FIDInceptionV3, fid_from_features, frechet_distance, image_features
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


def test_inception_loader_and_features(tmp_path):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(deep_fixture_weights(FIDInceptionV3(), "inception"), path)
    model = load_inception(path)
    frames = np.random.RandomState(2).randint(0, 255, (2, 48, 40, 3)).astype(np.uint8)
    feats = image_features(model, frames)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all() and not np.allclose(feats[0], feats[1])
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
