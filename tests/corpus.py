"""A corpus of hostile, broken and unusual inputs, every one built here in memory (no committed binaries).

`ENTRIES` lists (name, bytes, expectation): an entry either must be refused with a DetectorError whose
message contains every word of `error`, or must load, and then `check` says what the loaded RGB image
must look like. tests/test_images.py runs them through load_image; tests/test_hostile_input.py through
Detector.analyze, the CLI and the app's API.
"""
from __future__ import annotations

import functools
import io
import random
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from detector.images import MAX_BYTES


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG that declares width×height (8-bit RGB) and holds no pixel data: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to declare width×height."""
    data = bytearray(encode(noise((32, 32)), "JPEG"))
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


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


def twelve_megabytes() -> bytes:
    """A real 2000×2100 PNG of noise: 12 MB that no compressor can shrink."""
    data = encode(noise((2000, 2100), seed=12), "PNG", compress_level=1)
    assert 12 * 1024 * 1024 < len(data) < 13 * 1024 * 1024
    return data


def extreme_aspect() -> bytes:
    image = Image.new("RGB", (20000, 50), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10000, 50))
    return encode(image, "PNG")


def jpeg_zip_polyglot() -> bytes:
    """A valid JPEG that is also a valid ZIP archive (the archive is appended after the image's end marker)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.html", "<script>alert(1)</script>")
    return encode(quadrants(), "JPEG", quality=95) + archive.getvalue()


def png_html_polyglot() -> bytes:
    """A valid PNG carrying an HTML page with a script in a text chunk (opened as HTML, it runs)."""
    html = b"<html><body><script>alert('polyglot')</script></body></html>"
    png = encode(quadrants(), "PNG")
    return png[:33] + png_chunk(b"tEXt", b"Comment\0" + html) + png[33:]  # after the 8-byte signature + IHDR


def gif_js_polyglot() -> bytes:
    """GIF magic followed by JavaScript: runs as a script, is no image."""
    return b"GIF89a=1;/*" + bytes(40) + b"*/;alert(document.cookie);"


def pdf_jpeg_polyglot() -> bytes:
    """A PDF header followed by a whole JPEG: opened by a PDF reader, it is a document."""
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + encode(quadrants(), "JPEG")


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


def colour_at(*points_and_colours, atol=3, size=None) -> Callable[[Image.Image], None]:
    """Check ((x, y), (r, g, b)) pairs (and the size, when given) on the loaded image."""

    def check(image: Image.Image) -> None:
        if size:
            assert image.size == size
        pixels = np.asarray(image, dtype=np.int16)
        for (x, y), colour in points_and_colours:
            assert np.abs(pixels[y, x] - colour).max() <= atol, f"pixel {(x, y)} is {pixels[y, x]}, expected {colour}"

    return check


@dataclass
class Entry:
    name: str
    build: Callable[[], bytes]
    suffix: str = ".png"
    error: tuple[str, ...] = ()  # words the DetectorError message must contain
    check: Callable[[Image.Image], None] | None = None  # for inputs that load
    kinds: tuple[str, ...] = ("path", "bytes")  # how test_images hands it to load_image
    filename: str | None = None  # the name it is saved and uploaded under (default: from the entry's name)

    @functools.cached_property
    def data(self) -> bytes:
        return self.build()

    @property
    def file_name(self) -> str:
        return self.filename or re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") + self.suffix

    @property
    def too_big(self) -> bool:
        """Over the upload limit: the server refuses it before the app sees it."""
        return len(self.data) > MAX_BYTES


DECODED = ("path", "bytes", "pil")  # image inputs also handed over as an opened PIL image
# A name with path separators (both kinds, URL-encoded too), markup and unicode. A file on Linux cannot
# hold "/" in its name, so the "/" arrive URL-encoded; tests that talk HTTP send real ones too.
HOSTILE_NAME = "..\\..\\%2e%2e%2fetc%2fünïcødé ✓ <b>face.png"
ENTRIES = [
    Entry("zero bytes", lambda: b"", ".jpg", error=("empty",)),
    Entry("random bytes", lambda: random.Random(0).randbytes(4096), ".jpg", error=("not a readable image", "JPEG")),
    Entry("truncated JPEG", lambda: encode(noise(), "JPEG")[:1500], ".jpg", error=("truncated",)),
    Entry("truncated PNG", lambda: encode(noise(), "PNG")[:6000], error=("truncated",)),
    Entry("PNG bomb 30000x30000", lambda: png_header(30000, 30000), error=("pixels", "50 MP")),
    Entry("PNG bomb 10000x10000", lambda: png_header(10000, 10000), error=("pixels", "50 MP")),
    Entry("PNG 8000x8000 over the limit", lambda: png_header(8000, 8000), error=("8000×8000 pixels", "50 MP"), kinds=DECODED),
    Entry("JPEG declaring 65000x65000", lambda: jpeg_declaring(65000, 65000), ".jpg", error=("pixels", "50 MP")),
    Entry("over 10 MB", lambda: b"\xff\xd8\xff" + bytes(MAX_BYTES), ".jpg", error=("MB; the limit is 10 MB",),
          kinds=("path", "bytes", "file")),
    Entry("12 MB PNG", twelve_megabytes, error=("MB; the limit is 10 MB",), kinds=("path", "bytes", "file")),
    Entry("1x1 image", lambda: encode(Image.new("RGB", (1, 1)), "PNG"), error=("1×1", "too small"), kinds=DECODED),
    Entry("20000x50 extreme aspect ratio", extreme_aspect, kinds=DECODED,
          check=colour_at(((100, 25), (255, 0, 0)), ((19900, 25), (0, 0, 255)), atol=0, size=(20000, 50))),
    Entry("TIFF", lambda: encode(noise(), "TIFF"), ".tif", error=("not a readable image", "JPEG, PNG, WebP, GIF or HEIC")),
    Entry("PDF", lambda: b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n", ".pdf", error=("PDF",)),
    Entry("SVG", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', ".svg", error=("SVG",)),
    Entry("SVG with XML prolog", lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', error=("SVG",)),
    Entry("HTML renamed .png", lambda: b"<!DOCTYPE html>\n<html><body>hi</body></html>", error=("HTML",)),
    Entry("CMYK JPEG", lambda: encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"), ".jpg",
          check=colour_at(((16, 16), (255, 0, 0)), atol=8), kinds=DECODED),
    Entry("16-bit grayscale PNG is scaled, not clipped", gray16,
          check=colour_at(((5, 5), (128, 128, 128)), ((0, 0), (0, 0, 0)), ((31, 31), (255, 255, 255)), atol=1), kinds=DECODED),
    Entry("palette PNG with transparency", palette_with_transparency,
          check=colour_at(((4, 4), (255, 255, 255)), ((28, 4), (255, 0, 0)), atol=0), kinds=DECODED),
    Entry("grayscale", lambda: encode(Image.new("L", (32, 32), 77), "PNG"), check=colour_at(((9, 9), (77, 77, 77)), atol=0),
          kinds=DECODED),
    Entry("LA", lambda: encode(halves((0, 0), (50, 255), "LA"), "PNG"),
          check=colour_at(((4, 4), (255, 255, 255)), ((28, 4), (50, 50, 50)), atol=0), kinds=DECODED),
    Entry("RGBA", lambda: encode(halves((0, 0, 0, 0), (0, 0, 255, 255)), "PNG"),
          check=colour_at(((4, 4), (255, 255, 255)), ((28, 4), (0, 0, 255)), atol=0), kinds=DECODED),
    Entry("RGBA half-transparent black", lambda: encode(Image.new("RGBA", (32, 32), (0, 0, 0, 128)), "PNG"),
          check=colour_at(((4, 4), (127, 127, 127)), atol=1), kinds=DECODED),
    Entry("animated GIF: first frame", lambda: animated("GIF"), ".gif", check=colour_at(((16, 16), (255, 0, 0)), atol=0),
          kinds=DECODED),
    Entry("animated WebP: first frame", lambda: animated("WEBP", lossless=True), ".webp",
          check=colour_at(((16, 16), (255, 0, 0)), atol=2), kinds=DECODED),
    *(Entry(f"EXIF orientation {n} JPEG", lambda n=n: with_orientation(quadrants(), "JPEG", n), ".jpg", check=upright(n, 6),
            kinds=DECODED) for n in UPRIGHT),
    *(Entry(f"EXIF orientation {n} PNG", lambda n=n: with_orientation(quadrants(), "PNG", n), check=upright(n, 0),
            kinds=DECODED) for n in UPRIGHT),
    Entry("file name with path separators and unicode", lambda: encode(quadrants(), "PNG"), filename=HOSTILE_NAME,
          check=upright(1, 0), kinds=DECODED),
    Entry("JPEG/ZIP polyglot", jpeg_zip_polyglot, ".jpg", check=upright(1, 6), kinds=DECODED),
    Entry("PNG/HTML polyglot (script in a text chunk)", png_html_polyglot, check=upright(1, 0), kinds=DECODED),
    Entry("GIF/JavaScript polyglot", gif_js_polyglot, ".gif", error=("not a readable image",)),
    Entry("PDF/JPEG polyglot", pdf_jpeg_polyglot, ".jpg", error=("PDF",)),
]
assert len({entry.file_name for entry in ENTRIES}) == len(ENTRIES), "file names must be unique"
