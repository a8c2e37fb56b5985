"""CPBD on images whose answer is known, and the vectorised edge widths against a literal per-pixel walk."""

import cv2
import numpy as np
import pytest

from kdtalker.eval.cpbd import cpbd, marziliano_widths, sobel_edges, video_cpbd


def _edge_image(softness: float = 0.0) -> np.ndarray:
    """128x128 uint8-valued vertical edge 220 -> 20 centred on column 63 (one mid-grey pixel, or a tanh profile)."""
    x = np.arange(128.0)
    if softness:
        row = np.round(120 - 100 * np.tanh((x - 63) / softness))
    else:
        row = np.where(x < 63, 220.0, np.where(x == 63, 120.0, 20.0))
    return np.tile(row, (128, 1))


def _literal_widths(edges, image):
    """The cpbd package's row walk, pixel by pixel (reference for the vectorised version)."""
    gy, gx = np.gradient(image)
    h, w = image.shape
    out = np.zeros(image.shape)
    ang = np.zeros(image.shape)
    for r in range(h):
        for c in range(w):
            if gx[r, c] != 0:
                ang[r, c] = np.degrees(np.arctan2(gy[r, c], gx[r, c]))
    if not np.any(ang):
        return out
    q = 45 * np.round(ang / 45)
    for r in range(1, h - 1):
        for c in range(1, w - 1):
            if not edges[r, c] or q[r, c] not in (0, 180, -180):
                continue
            falling = q[r, c] != 0
            for m in range(101):
                i, o = c - 1 - m, c - 2 - m
                if o < 0 or ((image[r, o] - image[r, i]) <= 0 if falling else (image[r, o] - image[r, i]) >= 0):
                    break
            left = m + 1
            for m in range(101):
                i, o = c + 1 + m, c + 2 + m
                if o >= w or ((image[r, o] - image[r, i]) >= 0 if falling else (image[r, o] - image[r, i]) <= 0):
                    break
            out[r, c] = left + m + 1
    return out


def test_sharp_edge_is_fully_sharp():
    # Every edge pixel (one per inner row) is 2 pixels wide: P(blur) = 1 - exp(-(2/3)^3.6) = 0.21 <= 0.63.
    img = _edge_image()
    widths = marziliano_widths(sobel_edges(img), img)
    assert (widths > 0).sum() == 126 and set(np.unique(widths[widths > 0])) == {2.0}
    assert cpbd(img) == 1.0


def test_soft_edge_is_fully_blurred():
    # The tanh profile (softness 6) is 30 pixels wide: P(blur) = 1 - exp(-(30/3)^3.6) = 1 for every edge.
    img = _edge_image(6.0)
    widths = marziliano_widths(sobel_edges(img), img)
    assert (widths > 0).sum() == 126 and set(np.unique(widths[widths > 0])) == {30.0}
    assert cpbd(img) == 0.0


def test_flat_image_has_no_edges():
    assert cpbd(np.full((128, 128), 90, np.uint8)) == 0.0


def test_blur_lowers_cpbd():
    rs = np.random.RandomState(3)
    img = np.zeros((192, 192), np.uint8)
    for _ in range(30):
        x, y, w, h = rs.randint(0, 170), rs.randint(0, 170), rs.randint(6, 40), rs.randint(6, 40)
        cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), int(rs.randint(40, 255)), -1)
    sharp, mild, strong = cpbd(img), cpbd(cv2.GaussianBlur(img, (0, 0), 1.0)), cpbd(cv2.GaussianBlur(img, (0, 0), 3.0))
    assert sharp > 0.9 and sharp > mild > strong
    frames = np.repeat(np.stack([img, cv2.GaussianBlur(img, (0, 0), 3.0)])[..., None], 3, axis=-1)
    assert video_cpbd(frames) == pytest.approx((sharp + strong) / 2)


def test_widths_match_the_literal_walk():
    rs = np.random.RandomState(0)
    img = cv2.GaussianBlur(rs.randint(0, 255, (40, 48)).astype(np.uint8), (0, 0), 1.5).astype(np.float64)
    edges = sobel_edges(img)
    np.testing.assert_array_equal(marziliano_widths(edges, img), _literal_widths(edges, img))
