"""load_image over everything a user can hand it: each input becomes a correct RGB image or a
DetectorError whose message says what is wrong. The inputs are the corpus in tests/corpus.py."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from corpus import ENTRIES, Entry, quadrants, with_orientation
from detector import DetectorError, load_image

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
    "case, kind", [pytest.param(case, kind, id=f"{case.name} [{kind}]") for case in ENTRIES for kind in case.kinds]
)
def test_load_image(case: Entry, kind: str, tmp_path):
    source = as_source(case.data, kind, case.suffix, tmp_path)
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


def test_heic_photo_from_a_phone_is_read_upright(tmp_path):
    """HEIC (iPhones, many Android phones) through pillow-heif: decoded to RGB, its EXIF orientation applied."""
    from detector.images import EXTENSIONS, FORMAT_NAMES

    photo = quadrants((64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    photo.save(buffer, "HEIF", quality=95, exif=exif.tobytes())
    data = buffer.getvalue()
    assert data[4:12] in (b"ftypheic", b"ftypmif1", b"ftypheix")
    image = load_image(data)
    assert image.mode == "RGB" and image.size == (48, 64)
    expected = np.asarray(photo.transpose(Image.Transpose.ROTATE_270))
    assert np.abs(np.asarray(image, dtype=int) - expected.astype(int)).mean() < 12  # lossy, but the same picture
    assert "HEIC" in FORMAT_NAMES and ".heic" in EXTENSIONS

