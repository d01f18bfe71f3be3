"""Pictures and videos composed from real face photos, for the face and video tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
# An FFHQ photograph that OpenCV's Haar cascades, the finder before YuNet, miss when it is turned by 60° or its lower
# part is covered (benchmarks/face_recall.py measures the shared data turned and covered).
TILTED_OR_COVERED = SHARED_DATA / "ffhq_photos" / "real" / "13952.jpg"
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


def tilted(image: Image.Image, angle: float = 60) -> Image.Image:
    """Turned anticlockwise by `angle`°, the picture grown to hold it (black corners)."""
    return image.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


def lower_covered(image: Image.Image) -> Image.Image:
    """A flat grey from 55% of the height down: mouth and chin covered, as by a mask or a hand."""
    from PIL import ImageDraw

    image = image.copy()
    ImageDraw.Draw(image).rectangle((0, round(image.height * 0.55), image.width, image.height), fill=(128, 128, 128))
    return image


def centre_inside(box, region) -> bool:
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= x < region[2] and region[1] <= y < region[3]


def write_video(path: Path, face_paths: list[Path], seconds: int = 4, fps: int = 8, size: tuple[int, int] = (480, 360),
                fourcc: str = "mp4v") -> Path:
    """A real MP4 (OpenCV's VideoWriter): each second shows the next face photo, drifting slowly across a wall."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), "OpenCV cannot write this video"
    wall = background(size)
    side = round(min(size) * 0.8)
    faces = [Image.open(p).convert("RGB").resize((side, side), Image.Resampling.BICUBIC) for p in face_paths]
    for index in range(seconds * fps):
        frame = wall.copy()
        frame.paste(faces[(index // fps) % len(faces)], (20 + 2 * (index % fps), (size[1] - side) // 2))
        writer.write(cv2.cvtColor(np.asarray(frame), cv2.COLOR_RGB2BGR))
    writer.release()
    return path
