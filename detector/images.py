"""Open and validate one input image: limits, formats, bombs, EXIF orientation, colour modes.

Everything a user can upload ends here as an RGB PIL image or a DetectorError that says what is
wrong with the file in words a person understands. Nothing is written to disk.
"""
from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DetectorError

try:  # HEIC/HEIF, the format iPhones and many Android phones save photos in
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF = ("HEIF",)
except ImportError:  # an install without pillow-heif still serves every other format
    HEIF = ()

MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 50_000_000  # a 50 MP photo decodes to 150 MB of RGB; larger is a bomb or not a portrait
MIN_SIDE = 16
ORIENTATION = 0x0112  # the EXIF tag
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", *HEIF)  # Pillow's JPEG opener also reads MPO, the variant many phones write
FORMAT_NAMES = "JPEG, PNG, WebP, GIF or HEIC" if HEIF else "JPEG, PNG, WebP or GIF"
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", *((".heic", ".heif") if HEIF else ()))  # what folders are searched for
SNIFFED = (  # other files people upload by mistake, named so the message is specific
    (b"%PDF", "a PDF document"),
    (b"<svg", "an SVG vector drawing"),
    (b"<?xml", "an XML/SVG document"),
    (b"<!doctype html", "an HTML page"),
    (b"<html", "an HTML page"),
    (b"GIF8", None),
)

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image, np.ndarray]


def images_in(folder: Path) -> list[Path]:
    """Every file below `folder` with an image extension (EXTENSIONS), in sorted order: what a folder stands for."""
    return sorted(path for path in Path(folder).rglob("*") if path.is_file() and path.suffix.lower() in EXTENSIONS)


def read_limited(source, limit: int = MAX_BYTES, what: str = "file") -> bytes:
    """The bytes of a path, bytes or file object, refusing empty input and anything over `limit` bytes."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise DetectorError(f"No such file: {path.name}")
        _check_byte_size(path.stat().st_size, limit, what)
        return path.read_bytes()
    data = source if isinstance(source, bytes) else source.read(limit + 1)  # never more than the limit + 1
    if not isinstance(source, bytes) and len(data) > limit:  # a stream's full size is unknown
        raise DetectorError(f"The {what} is over {limit // 1024 // 1024} MB; the limit is {limit // 1024 // 1024} MB.")
    _check_byte_size(len(data), limit, what)
    return data


def _check_byte_size(size: int, limit: int, what: str) -> None:
    if size == 0:
        raise DetectorError("The file is empty (0 bytes).")
    if size > limit:
        # rounded up, so a file just over the limit never reads "10.0 MB; the limit is 10 MB"
        megabytes = math.ceil(size * 10 / 1024 / 1024) / 10
        raise DetectorError(f"The {what} is {megabytes:.1f} MB; the limit is {limit // 1024 // 1024} MB.")


def _not_an_image(data: bytes) -> DetectorError:
    head = data[:512].lstrip().lower()
    for magic, what in SNIFFED:
        if what and head.startswith(magic.lower()):
            return DetectorError(f"This is {what}, not a photo. Upload a {FORMAT_NAMES} image.")
    if b"<svg" in head:
        return DetectorError(f"This is an SVG vector drawing, not a photo. Upload a {FORMAT_NAMES} image.")
    return DetectorError(f"This file is not a readable image. Upload a {FORMAT_NAMES} image.")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB; transparency is flattened onto white, 16-bit is scaled, not clipped."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
        return Image.fromarray(np.clip(pixels / top * 255.0, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def reencode_jpeg(image: Image.Image, quality: int) -> Image.Image:
    """`image` as a JPEG at `quality` would decode it (the one place serving, training and evaluation re-encode)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(quality))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def open_file_rgb(path_or_bytes) -> Image.Image:
    """A trusted file (a dataset's image: a path or its bytes) → upright RGB, decoded as `load_image` decodes."""
    image = Image.open(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes)
    return to_rgb(upright(image))


def load_image(source: ImageSource) -> Image.Image:
    """Validated RGB image from a path, bytes, file object, PIL image or HxWx3 uint8 array."""
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or source.dtype != np.uint8:
            raise DetectorError("Arrays must be HxW or HxWx3 uint8 images.")
        source = Image.fromarray(source)
    if isinstance(source, Image.Image):  # e.g. Image.open(path): still stored as the camera wrote it
        _check_dimensions(source.width, source.height)
        return to_rgb(upright(source))
    data = read_limited(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            _check_dimensions(image.width, image.height)
            image.seek(0)  # animated files: the first frame
            image.load()
    except DetectorError:
        raise
    except UnidentifiedImageError:
        raise _not_an_image(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DetectorError(f"The image declares too many pixels (limit {MAX_PIXELS // 1_000_000} MP).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise DetectorError(f"The image file is truncated or corrupt and cannot be decoded ({err}).") from None
    return to_rgb(upright(image))


def upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (a no-op once applied: exif_transpose drops the tag)."""
    try:
        if image.getexif().get(ORIENTATION, 1) == 1:
            return image  # already upright: no copy of a possibly large picture
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not lose the picture itself
        return image


def _check_dimensions(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise DetectorError(
            f"The image is {width}×{height} pixels ({width * height / 1e6:.0f} MP); "
            f"the limit is {MAX_PIXELS // 1_000_000} MP. Resize it and try again."
        )
    if min(width, height) < MIN_SIDE:
        raise DetectorError(f"The image is {width}×{height} pixels: too small to analyse (at least {MIN_SIDE} px a side).")
