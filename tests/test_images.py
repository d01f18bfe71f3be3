"""load_image over everything a user can hand it: each input becomes a correct RGB image or a
DetectorError whose message says what is wrong. Every input is built here, in memory."""
from __future__ import annotations

import io
import random
import struct
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from detector import DetectorError, load_image
from detector.images import MAX_BYTES


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG that declares width×height (8-bit RGB) and holds no pixel data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def noise(size=(64, 64), seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def halves(left, right, mode="RGBA", size=(32, 32)) -> Image.Image:
    """An image whose left half is `left` and right half is `right`."""
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def quadrants(size=(48, 32)) -> Image.Image:
    """Four differently coloured quadrants on a non-square canvas: every flip and rotation looks different."""
    width, height = size
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 255, 0), (width // 2, 0, width, height // 2))
    image.paste((0, 0, 255), (0, height // 2, width // 2, height))
    image.paste((255, 255, 0), (width // 2, height // 2, width, height))
    return image


def with_orientation(image: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[274] = orientation
    return encode(image, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


def animated(fmt: str, **options) -> bytes:
    red, blue = Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))
    return encode(red, fmt, save_all=True, append_images=[blue], duration=100, loop=0, **options)


def palette_with_transparency() -> bytes:
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (16, 0, 32, 32))
    return encode(image, "PNG", transparency=0)


def gray16() -> bytes:
    pixels = np.full((32, 32), 32768, dtype=np.uint16)
    pixels[0, 0], pixels[-1, -1] = 0, 65535
    return encode(Image.fromarray(pixels), "PNG")


# The EXIF 274 (Orientation) values and the transpose that makes each stored image upright, from the EXIF spec.
UPRIGHT = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def upright(orientation: int, atol: float) -> Callable[[Image.Image], None]:
    def check(image: Image.Image) -> None:
        method = UPRIGHT[orientation]
        expected = quadrants() if method is None else quadrants().transpose(method)
        assert image.size == expected.size
        diff = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(expected, dtype=np.int16))
        assert diff.mean() <= atol, f"orientation {orientation}: mean difference {diff.mean():.1f}"

    return check


def colour_at(*points_and_colours, atol=3) -> Callable[[Image.Image], None]:
    """Check ((x, y), (r, g, b)) pairs on the loaded image."""

    def check(image: Image.Image) -> None:
        pixels = np.asarray(image, dtype=np.int16)
        for (x, y), colour in points_and_colours:
            assert np.abs(pixels[y, x] - colour).max() <= atol, f"pixel {(x, y)} is {pixels[y, x]}, expected {colour}"

    return check


@dataclass
class Case:
    name: str
    build: Callable[[], bytes]
    suffix: str = ".png"
    error: tuple[str, ...] = ()  # words the DetectorError message must contain
    check: Callable[[Image.Image], None] | None = None  # for inputs that load
    kinds: tuple[str, ...] = ("path", "bytes")


DECODED = ("path", "bytes", "pil")  # image inputs also handed over as an opened PIL image
CASES = [
    Case("zero bytes", lambda: b"", ".jpg", error=("empty",)),
    Case("random bytes", lambda: random.Random(0).randbytes(4096), ".jpg", error=("not a readable image", "JPEG")),
    Case("truncated JPEG", lambda: encode(noise(), "JPEG")[:1500], ".jpg", error=("truncated",)),
    Case("truncated PNG", lambda: encode(noise(), "PNG")[:6000], error=("truncated",)),
    Case("PNG bomb 30000x30000", lambda: png_header(30000, 30000), error=("pixels", "50 MP")),
    Case("PNG bomb 10000x10000", lambda: png_header(10000, 10000), error=("pixels", "50 MP")),
    Case("PNG 8000x8000 over the limit", lambda: png_header(8000, 8000), error=("8000×8000 pixels", "50 MP"), kinds=DECODED),
    Case("over 10 MB", lambda: b"\xff\xd8\xff" + bytes(MAX_BYTES), ".jpg", error=("10 MB",), kinds=("path", "bytes", "file")),
    Case("1x1 image", lambda: encode(Image.new("RGB", (1, 1)), "PNG"), error=("1×1", "too small"), kinds=DECODED),
    Case("TIFF", lambda: encode(noise(), "TIFF"), ".tif", error=("not a readable image", "JPEG, PNG, WebP or GIF")),
    Case("PDF", lambda: b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n", error=("PDF",)),
    Case("SVG", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', error=("SVG",)),
    Case("SVG with XML prolog", lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', error=("SVG",)),
    Case("HTML renamed .png", lambda: b"<!DOCTYPE html>\n<html><body>hi</body></html>", error=("HTML",)),
    Case("CMYK JPEG", lambda: encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"), ".jpg",
         check=colour_at(((16, 16), (255, 0, 0)), atol=8), kinds=DECODED),
    Case("16-bit grayscale PNG is scaled, not clipped", gray16,
         check=colour_at(((5, 5), (128, 128, 128)), ((0, 0), (0, 0, 0)), ((31, 31), (255, 255, 255)), atol=1), kinds=DECODED),
    Case("palette PNG with transparency", palette_with_transparency,
         check=colour_at(((4, 4), (255, 255, 255)), ((28, 4), (255, 0, 0)), atol=0), kinds=DECODED),
    Case("grayscale", lambda: encode(Image.new("L", (32, 32), 77), "PNG"), check=colour_at(((9, 9), (77, 77, 77)), atol=0),
         kinds=DECODED),
    Case("LA", lambda: encode(halves((0, 0), (50, 255), "LA"), "PNG"),
         check=colour_at(((4, 4), (255, 255, 255)), ((28, 4), (50, 50, 50)), atol=0), kinds=DECODED),
    Case("RGBA", lambda: encode(halves((0, 0, 0, 0), (0, 0, 255, 255)), "PNG"),
         check=colour_at(((4, 4), (255, 255, 255)), ((28, 4), (0, 0, 255)), atol=0), kinds=DECODED),
    Case("RGBA half-transparent black", lambda: encode(Image.new("RGBA", (32, 32), (0, 0, 0, 128)), "PNG"),
         check=colour_at(((4, 4), (127, 127, 127)), atol=1), kinds=DECODED),
    Case("animated GIF: first frame", lambda: animated("GIF"), ".gif", check=colour_at(((16, 16), (255, 0, 0)), atol=0),
         kinds=DECODED),
    Case("animated WebP: first frame", lambda: animated("WEBP", lossless=True), ".webp",
         check=colour_at(((16, 16), (255, 0, 0)), atol=2), kinds=DECODED),
    *(Case(f"EXIF orientation {n} JPEG", lambda n=n: with_orientation(quadrants(), "JPEG", n), ".jpg", check=upright(n, 6),
           kinds=DECODED) for n in UPRIGHT),
    *(Case(f"EXIF orientation {n} PNG", lambda n=n: with_orientation(quadrants(), "PNG", n), check=upright(n, 0), kinds=DECODED)
      for n in UPRIGHT),
]


def as_source(data: bytes, kind: str, suffix: str, tmp_path):
    if kind == "path":
        path = tmp_path / f"input{suffix}"
        path.write_bytes(data)
        return path
    if kind == "file":
        return io.BytesIO(data)
    if kind == "pil":
        return Image.open(io.BytesIO(data))
    return data


@pytest.mark.parametrize(
    "case, kind", [pytest.param(case, kind, id=f"{case.name} [{kind}]") for case in CASES for kind in case.kinds]
)
def test_load_image(case: Case, kind: str, tmp_path):
    source = as_source(case.build(), kind, case.suffix, tmp_path)
    if case.error:
        with pytest.raises(DetectorError) as raised:
            load_image(source)
        for word in case.error:
            assert word in str(raised.value)
    else:
        image = load_image(source)
        assert image.mode == "RGB"
        case.check(image)


def test_missing_path_names_the_file(tmp_path):
    with pytest.raises(DetectorError, match="No such file: gone.jpg"):
        load_image(tmp_path / "gone.jpg")


@pytest.mark.parametrize("shape, dtype", [((20, 30, 3), np.uint8), ((20, 30), np.uint8)])
def test_arrays_load_as_rgb(shape, dtype):
    pixels = np.random.default_rng(1).integers(0, 256, shape).astype(dtype)
    image = load_image(pixels)
    assert image.mode == "RGB" and image.size == (30, 20)
    expected = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
    assert np.array_equal(np.asarray(image), expected)


def test_float_arrays_are_refused():
    with pytest.raises(DetectorError, match="uint8"):
        load_image(np.zeros((20, 20, 3), dtype=np.float32))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_loading_a_loaded_image_does_not_rotate_it_again(orientation):
    """Detector.analyze_batch passes already loaded images through load_image again."""
    once = load_image(with_orientation(quadrants(), "PNG", orientation))
    assert np.array_equal(np.asarray(load_image(once)), np.asarray(once))
