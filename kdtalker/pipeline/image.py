"""Reading a portrait into uint8 RGB: EXIF orientation, grayscale, alpha, 16-bit and size checks."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kdtalker.errors import ImageError

MIN_SIDE = 64  # below this no face is big enough for dlib's detector (its smallest window is 80 px at upsample 1)
MAX_PIXELS = 100_000_000  # beyond this decoding alone needs gigabytes; PIL itself refuses ~179 MP


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file -> (H, W, 3) uint8 RGB, upright as a viewer shows it; ImageError on bad input."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"source image {path} not found")
    try:
        with warnings.catch_warnings():
            # PIL warns above ~89 MP; our own limit (MAX_PIXELS) decides, with a message that says so.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_pixels(path, img.width, img.height)
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = to_rgb8(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        # PIL refuses to even open images above twice its own limit (~179 MP): the size is in its message.
        numbers = [int(n) for n in re.findall(r"\d+", str(exc))]
        pixels = f" ({numbers[0] / 1e6:.0f} MP)" if numbers else ""
        raise ImageError(
            f"source image {path} has too many pixels{pixels}; the limit is "
            f"{MAX_PIXELS // 1_000_000} MP - downscale it first"
        ) from None
    except UnidentifiedImageError as exc:
        raise ImageError(f"source image {path} could not be read as an image ({exc}); use a PNG or JPEG file") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"source image {path} is damaged or truncated ({type(exc).__name__}: {exc})") from exc
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageError(
            f"source image {path} is {width}x{height}; it must be at least {MIN_SIDE}x{MIN_SIDE} pixels "
            "with the face at least about 80 pixels wide"
        )
    return rgb


def _check_pixels(path: Path, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"source image {path} has too many pixels: {width}x{height} = {width * height / 1e6:.0f} MP; the limit is "
            f"{MAX_PIXELS // 1_000_000} MP - downscale it first"
        )


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB: high bit depths rescaled, alpha composited over white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # PIL's own 'I' -> 'L' conversion clips at 255 instead of rescaling, which whitens 16-bit scans.
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        top = 1.0 if values.max() <= 1.0 else 255.0
        gray = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels often hold black or garbage colour; show them as a white backdrop instead.
        rgba = img.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(backdrop, rgba).convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
