"""Pictures and videos composed from real face photos, for the face and video tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CANVAS = (1000, 800)
SLOTS = ((40, 30), (560, 50), (70, 420), (600, 400))  # top-left corners of the four faces
FACE_WIDTH = 300


def background(size: tuple[int, int] = CANVAS) -> Image.Image:
    """A soft colour gradient: a plain wall, nothing a face finder should fire on."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([150 + 50 * x / width, 140 + 40 * y / height, 120 + 30 * (x + y) / (width + height)], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


def four_faces(paths: list[Path]) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Four real face photos pasted 300 px wide on a 1000×800 canvas; returns the picture and where each one went."""
    canvas, placed = background(), []
    for path, (left, top) in zip(paths, SLOTS):
        face = Image.open(path).convert("RGB")
        face = face.resize((FACE_WIDTH, round(FACE_WIDTH * face.height / face.width)), Image.Resampling.BICUBIC)
        canvas.paste(face, (left, top))
        placed.append((left, top, left + face.width, top + face.height))
    return canvas, placed


def centre_inside(box, region) -> bool:
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= x < region[2] and region[1] <= y < region[3]
