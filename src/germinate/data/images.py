"""Decode any supported image file into a square RGB uint8 array of a given size."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

# PIL's own limit (about 89 megapixels); above it a file is treated as a decompression bomb.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


class UnreadableImage(Exception):
    """The file has an image extension but cannot be decoded into a usable image."""


def is_image_name(path: str | Path) -> bool:
    """True when the file name has a supported image extension (any case), hidden files excluded."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: alpha is composited onto white, 16-bit is scaled to 8-bit."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert("RGB")


def center_square(im: Image.Image) -> Image.Image:
    """Crop the largest centred square: keeps the aspect ratio, drops the edges of the long side."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side))


def read_image(path: str | Path | BinaryIO, px: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode `path` (or an open binary file) to a (px, px, 3) uint8 array: EXIF orientation
    honoured, centre square, resized. Images over `max_pixels` are refused before decoding.

    Raises UnreadableImage with a short reason for anything that is not a usable image.
    """
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its pixel limit; we refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > max_pixels:
                    raise UnreadableImage(f"too large ({im.width}x{im.height} pixels)")
                if im.format == "JPEG":
                    # Let libjpeg decode at a reduced scale: much faster for large photos.
                    im.draft("RGB", (px * 2, px * 2))
                im = ImageOps.exif_transpose(im)
                im.load()
                square = center_square(_to_rgb(im))
                if square.width < 1:
                    raise UnreadableImage("empty image")
                resized = square.resize((px, px), Image.Resampling.BICUBIC, reducing_gap=3.0)
                return np.asarray(resized, dtype=np.uint8).copy()
    except UnreadableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnreadableImage("too large (decompression-bomb limit)") from e
    except Exception as e:  # PIL raises many types for corrupt data; all mean "unreadable"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UnreadableImage(reason[:200]) from e
