"""Source-image loading: formats, orientation, bit depth, alpha, sizes, and the face crop (real and synthetic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdtalker.errors import ImageError
from kdtalker.pipeline import face as face_mod
from kdtalker.pipeline import image as image_mod
from kdtalker.pipeline.face import crop_face, official_crop_box
from kdtalker.pipeline.image import load_image

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "astronaut.png"


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.asarray(Image.open(EXAMPLE).convert("RGB"))


@pytest.fixture(scope="module")
def astronaut_crop(astronaut):
    return crop_face(astronaut)


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ImageError, match="could not be read"):
        load_image(bad)
    truncated = tmp_path / "trunc.png"
    data = EXAMPLE.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match=r"damaged|truncated|could not be read"):
        load_image(truncated)


def test_grayscale_rgba_and_16bit(tmp_path, astronaut):
    gray = Image.fromarray(astronaut).convert("L")
    gray.save(tmp_path / "gray.png")
    out = load_image(tmp_path / "gray.png")
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], np.asarray(gray)) and np.array_equal(out[..., 0], out[..., 2])

    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # a transparent corner shows white, the opaque rest is unchanged
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = load_image(tmp_path / "rgba.png")
    assert np.all(out[:10, :10] == 255) and np.array_equal(out[20:], astronaut[20:])

    deep = np.asarray(gray).astype(np.uint16) * 257
    Image.fromarray(deep).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    out = load_image(tmp_path / "gray16.png")
    assert np.abs(out[..., 0].astype(int) - np.asarray(gray).astype(int)).max() <= 1  # rescaled, not clipped to white


def test_exif_rotation_is_applied(tmp_path, astronaut):
    # Stored sideways with EXIF orientation 6 ("rotate 90 CW to view"): load_image must return it upright.
    stored = np.ascontiguousarray(np.rot90(astronaut, k=1))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg")
    assert out.shape == astronaut.shape
    assert np.abs(out.astype(int) - astronaut.astype(int)).mean() < 6  # only JPEG noise left
    assert crop_face(out).num_faces >= 1


def test_tiny_and_huge(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30), "gray").save(tmp_path / "tiny.png")
    with pytest.raises(ImageError, match="at least 64x64"):
        load_image(tmp_path / "tiny.png")
    Image.new("RGB", (300, 200), "gray").save(tmp_path / "big.png")
    monkeypatch.setattr(image_mod, "MAX_PIXELS", 50_000)
    with pytest.raises(ImageError, match="downscale"):
        load_image(tmp_path / "big.png")


def test_no_face(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))
    with pytest.raises(ImageError, match="no face"):
        crop_face(ramp)


def test_official_crop_geometry_by_hand():
    # Upright face: eyes (100,100) and (140,100) (landmarks 36-47), mouth corners (105,150) and (135,150).
    lm = np.zeros((68, 2))
    lm[36:42] = (100, 100)
    lm[42:48] = (140, 100)
    lm[48] = (105, 150)
    lm[54] = (135, 150)
    # x = (40,0) + (50,0) normalised * max(80, 90) = (90,0); y = (0,90); c = (120,105); quad x 30..210, y 15..195;
    # border 18 -> outer box (12, 0, 228, 213); inner (18.5, 15.5)-(198.5, 195.5) -> ints; back to image coords.
    size, box = official_crop_box(lm, 400, 400)
    assert size == (400, 400) and box == (30, 15, 210, 195)
    # crop scale 2 doubles the half-size around the same centre: quad x -60..300, y -75..285 (clamped at 0).
    _, box2 = official_crop_box(lm, 400, 400, scale=2.0)
    assert box2 == (0, 0, 300, 285)
    # A big face in a big image: the official code first downscales by shrink = floor(qsize / 1024).
    size, box = official_crop_box(lm * 20, 8000, 8000)
    assert size == (2667, 2667)
    assert abs((box[2] - box[0]) - 3600 / 3) <= 2


def test_crop_of_the_example(astronaut, astronaut_crop):
    crop = astronaut_crop
    assert crop.image.shape == (256, 256, 3) and crop.image.dtype == np.uint8
    x0, y0, x1, y1 = crop.box
    fx0, fy0, fx1, fy1 = crop.face_box
    assert x0 <= fx0 and y0 <= fy0 and x1 >= fx1 and y1 >= fy1  # the crop contains the detected face
    assert abs((x1 - x0) - (y1 - y0)) <= 2  # not clamped here, so square
    # The crop is the box region resized to 256 (bilinear): compare with our own resize of it.
    import cv2

    expected = cv2.resize(astronaut[int(y0) : int(y1), int(x0) : int(x1)], (256, 256), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(crop.image, expected)


def test_largest_face_first_and_face_index(astronaut):
    import cv2

    top = astronaut[:300]  # the upper part: one face (the suit's patch below also looks like a face to dlib)
    canvas = np.full((300, 800, 3), 200, np.uint8)
    canvas[:, :512] = top
    canvas[:225, 512 : 896 - 96] = cv2.resize(top, (384, 225), interpolation=cv2.INTER_AREA)[:, :288]
    largest = crop_face(canvas)
    second = crop_face(canvas, face_index=1)
    assert largest.num_faces == 2
    assert largest.face_box[2] < 512 and second.face_box[0] > 512
    assert (largest.face_box[2] - largest.face_box[0]) > (second.face_box[2] - second.face_box[0])
    with pytest.raises(ImageError, match="face_index=9"):
        crop_face(canvas, face_index=9)


def test_downscaled_detection_matches(astronaut, astronaut_crop, monkeypatch):
    # Huge images are searched on a downscaled copy; the landmarks still come from the full image.
    monkeypatch.setattr(face_mod, "DETECT_MAX_SIDE", 300)
    crop = crop_face(astronaut)
    assert np.abs(np.asarray(crop.box) - np.asarray(astronaut_crop.box)).max() <= 6
