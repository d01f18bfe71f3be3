"""Find faces, crop each with a margin, and map boxes back to the original image.

Why OpenCV's Haar cascades: the detector's weights must install with a package (nothing is
downloaded at run time) and fit our pins (numpy 2.2, torch 2.14). The cascades ship inside
opencv-python-headless, already a dependency. The better detectors do not fit: BlazeFace comes with
mediapipe 0.10.x, whose wheels pin numpy<2 and pull jax; MTCNN comes with facenet-pytorch 2.6, which
pins torch<2.3 and numpy<2.

How it finds faces (tuned for recall on the tight face crops of the project's data, measured by
benchmarks/face_recall.py):

- the grey image is scaled down once to at most `work_side` pixels a side (speed; faces smaller
  than `min_size` of the shorter side are not looked for);
- it is padded by `pad` of its longer side with replicated edges: a cascade needs some context
  around a face, and a tight crop whose face fills the frame is missed without it;
- OpenCV's frontal-face cascade runs first; only when it finds nothing does the profile cascade run,
  on the image and its mirror (it knows one side only);
- the best-confirmed detection (most neighbouring hits) is the first face, at the cascade's own
  `min_neighbors`; one confirmation fewer (`tie_neighbors`) counts as a tie, won by the larger box, once a
  detection has `extra_neighbors` - 1: a face that fills the frame is confirmed at fewer scales than a small
  face behind it or a patch of hair or an eye, which otherwise became the only face judged; a further face
  needs `extra_neighbors` confirmations (at 3, ties, collars and hands below a face fire too), a side of at
  least `min_relative` of the first face's, and may not lie mostly inside a face already kept; at most
  `max_faces` are kept, the largest first.

Measured on the 13,949 face crops of ../shared/data (2026-12-05): a face is found in 95.3% of them (88% on
Pixabay portraits, 93-94% on DFDC, SDFD and Yonsei, 99% or more on the others), and 87% of the faces in
composed pictures of four faces, with no false alarm in 200 pictures. A Haar
cascade misses faces that are strongly turned, tilted, occluded (a hand, a mask) or cut by the frame.
When none is found the caller analyses the whole image and says so: for a tight crop whose face was
missed, that is the face anyway.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # left, top, right, bottom in image pixels (right/bottom exclusive)

CASCADES = {
    "frontal": cv2.data.haarcascades + "haarcascade_frontalface_default.xml",
    "profile": cv2.data.haarcascades + "haarcascade_profileface.xml",
}
_local = threading.local()  # a CascadeClassifier per thread: OpenCV does not promise it is thread-safe


def _cascade(name: str) -> cv2.CascadeClassifier:
    cascades = getattr(_local, "cascades", None)
    if cascades is None:
        cascades = _local.cascades = {}
    if name not in cascades:
        classifier = cv2.CascadeClassifier(CASCADES[name])
        if classifier.empty():  # the XML ships with the wheel; missing means a broken install
            raise RuntimeError(f"OpenCV's {name} face cascade could not be loaded from {CASCADES[name]}")
        cascades[name] = classifier
    return cascades[name]


@dataclass(frozen=True)
class FaceFinder:
    """Callable PIL image → face boxes (largest first). The defaults are the measured ones."""

    scale_factor: float = 1.1
    min_neighbors: int = 3
    min_size: float = 0.05  # the smallest face looked for, as a fraction of the image's shorter side
    pad: float = 0.25
    work_side: int = 640
    profile: bool = True
    extra_neighbors: int = 6  # confirmations a face needs when it is not the best-confirmed one
    tie_neighbors: int = 1  # a larger box this many confirmations short of the best-confirmed one is the first face
    min_relative: float = 0.3  # a further face's side must be at least this fraction of the first face's
    max_faces: int = 20

    def __call__(self, image: Image.Image) -> list[Box]:
        grey = np.asarray(image.convert("L"))
        height, width = grey.shape
        scale = min(1.0, self.work_side / max(width, height))
        if scale < 1.0:
            grey = cv2.resize(grey, (max(1, round(width * scale)), max(1, round(height * scale))),
                              interpolation=cv2.INTER_AREA)
        side = max(20, round(self.min_size * min(grey.shape)))
        pad = round(self.pad * max(grey.shape))
        if pad:
            grey = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = self._detect("frontal", grey, side)
        if not found and self.profile:
            found = self._detect("profile", grey, side)
            mirrored = self._detect("profile", np.ascontiguousarray(grey[:, ::-1]), side)
            found += [((grey.shape[1] - x - w, y, w, h), n) for (x, y, w, h), n in mirrored]
        boxes = []
        for (x, y, w, h), neighbours in found:
            left, top = max(0, round((x - pad) / scale)), max(0, round((y - pad) / scale))
            right, bottom = min(width, round((x + w - pad) / scale)), min(height, round((y + h - pad) / scale))
            if right - left >= 2 and bottom - top >= 2:  # a box in the padding only is no face
                boxes.append(((left, top, right, bottom), neighbours))
        return merge(boxes, self.extra_neighbors, self.min_relative, tie=self.tie_neighbors)[: self.max_faces]

    def _detect(self, name: str, grey: np.ndarray, side: int) -> list[tuple[tuple[int, int, int, int], int]]:
        """(x, y, w, h) boxes with the number of neighbouring detections that confirm each."""
        found, neighbours = _cascade(name).detectMultiScale2(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side))
        return [(tuple(int(v) for v in box), int(n)) for box, n in zip(found, neighbours)]


def _area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def _intersection(a: Box, b: Box) -> int:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def merge(found: list[tuple[Box, int]], extra_neighbors: int = 6, min_relative: float = 0.3,
          overlap: float = 0.3, tie: int = 1) -> list[Box]:
    """(box, neighbours) → boxes, largest first. The first face is the largest of the best-confirmed boxes, where
    `tie` confirmations fewer still count as best once a box has `extra_neighbors` - 1; another face needs
    `extra_neighbors` confirmations (neighbouring detections), a side of at least `min_relative` of the first
    face's, and at most `overlap` of its area inside a face already kept."""
    if not found:
        return []
    best = max(neighbours for _, neighbours in found)
    enough = min(best, max(best - tie, extra_neighbors - 1))
    first, _ = max((item for item in found if item[1] >= enough), key=lambda item: _area(item[0]))
    kept = [first]
    smallest = min_relative * min(first[2] - first[0], first[3] - first[1])
    for box, neighbours in sorted(found, key=lambda item: _area(item[0]), reverse=True):
        if box == first or neighbours < extra_neighbors or min(box[2] - box[0], box[3] - box[1]) < smallest:
            continue
        if all(_intersection(box, other) < overlap * _area(box) for other in kept):
            kept.append(box)
    return sorted(kept, key=_area, reverse=True)


# The margin added round a face before it is judged, as a fraction of its side, for a model whose calibration does
# not name one (config.json's calibration.face_margin, written by training.evaluate --faces --calibrate).
DEFAULT_MARGIN = 0.3
MAX_MARGIN = 3.0


def crop_box(face: Box, size: tuple[int, int], margin: float = DEFAULT_MARGIN) -> Box:
    """A square around `face` grown by `margin` of its side on every side, moved inside the image, clipped to it."""
    width, height = size
    left, top, right, bottom = face
    side = round(max(right - left, bottom - top) * (1 + 2 * margin))
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    new_left = min(max(0, round(centre_x - side / 2)), max(0, width - side))
    new_top = min(max(0, round(centre_y - side / 2)), max(0, height - side))
    return (new_left, new_top, min(width, new_left + side), min(height, new_top + side))


DEFAULT_FINDER = FaceFinder()
# For training pictures, where a face fills a good part of the frame: 2.5× faster (11 instead of 28 ms on
# 150 shared photos), a face found in 96% instead of 97% of them.
LARGE_FACE_FINDER = FaceFinder(work_side=192, scale_factor=1.15, min_size=0.2)


def find_faces(image: Image.Image, finder: FaceFinder = DEFAULT_FINDER) -> list[Box]:
    """Face boxes in `image` (RGB PIL), largest first; [] when none is found."""
    return finder(image)
