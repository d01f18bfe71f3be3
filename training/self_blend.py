"""Self-blended pseudo-fakes: a manipulated face made from one real photo, during training.

After Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022), and Li et al.,
"Face X-ray" (CVPR 2020). A slightly altered copy of the photo (colour, brightness, contrast,
saturation, sharpness, a little scale and a few pixels of shift) is blended back into the same photo
inside a soft, randomly deformed face-shaped mask:

    pseudo_fake = altered * mask + photo * (1 - mask)

The result carries the marks a face swap or a retouch leaves (a blending boundary, a colour or
sharpness mismatch between the face and its surroundings) and nothing else: same person, same camera,
same compression. Every real source then also yields fakes, so a source's look (resolution, framing,
lighting) stops predicting the label.

Two masks (`MASKS`, train.py's --pseudo-fake-mask):

- `ellipse`: an ellipse in the face box (`detector.faces`; a central box when no face is found, which on the
  tight face crops of the training data is the face anyway), deformed by a smooth random displacement field,
  grown or shrunk, blurred by a random amount and scaled by a random blend ratio.
- `hull`: the paper's mask, the convex hull of the face's landmarks (MediaPipe Face Mesh, `training/face_mesh.py`:
  the 36-point face oval, forehead included and raised towards the hairline by a random amount, as the paper's
  81-point landmarks reach it; one time in four only up to the brows, as the paper's 68 points do), then an elastic
  deformation, a random erosion or dilation, a Gaussian blur of random width and a random blend ratio. The altered
  copy also gets, one time in three, a down-and-up scale (the paper's frequency transform). The landmarks come
  from a `LandmarkCache` computed once per training set (`pseudo_fake_blend`); a picture not in it (a face-crop view)
  gets Face Mesh at once, and one without a face found the ellipse.

The paper alters either the source or the target; here always the source (the altered copy), so that outside
the mask the pseudo-fake is the photo itself, as its real counterpart in training is.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from detector.faces import DEFAULT_FINDER, square_box
from detector.images import open_file_rgb

logger = logging.getLogger(__name__)


MASKS = ("ellipse", "hull")
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # as in the SBI paper: often a full blend, sometimes a faint one
# The face box of a tight crop when the cascade finds none: the face fills most of the frame.
FALLBACK_BOX = (0.2, 0.15, 0.8, 0.85)


@dataclass(frozen=True)
class SelfBlend:
    """Callable (RGB PIL image, numpy Generator) → (pseudo-fake RGB PIL image, mask HxW float32 in [0, 1]).

    Blending happens at most `work_side` pixels a side (the picture is scaled down first when larger):
    training sees 128-288 px faces, and the blend costs a few milliseconds there."""

    work_side: int = 320
    finder: Callable[[Image.Image], list] = DEFAULT_FINDER
    max_shift: float = 0.03  # of the face box's side
    max_scale: float = 0.05  # ±, of the altered copy's size
    deform: float = 0.08  # displacement field amplitude, of the face box's side
    # The hull mask: picture (full size) → 468 Face Mesh landmarks (x, y) in its pixels, or None (the ellipse then).
    landmarks: Callable[[Image.Image], np.ndarray | None] | None = field(default=None, compare=False)

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> tuple[Image.Image, np.ndarray]:
        rng = rng if rng is not None else np.random.default_rng(random.getrandbits(64))
        image = original = image.convert("RGB")
        if max(image.size) > self.work_side:
            scale = self.work_side / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BICUBIC, reducing_gap=3.0)
        photo = np.asarray(image, dtype=np.float32) / 255.0
        points = self.landmarks(original) if self.landmarks is not None else None
        if points is not None:  # the hull mask
            points = np.asarray(points, np.float32) * (image.width / original.width)
            box = landmark_box(points)
            mask = hull_mask(photo.shape[:2], points, rng)
            altered = down_up_scale(alter(photo, box, rng, self.max_shift, self.max_scale), rng)
        else:
            box = self.face_box(image)
            mask = face_mask(photo.shape[:2], box, rng, self.deform)
            altered = alter(photo, box, rng, self.max_shift, self.max_scale)
        blended = altered * mask[..., None] + photo * (1.0 - mask[..., None])
        return Image.fromarray(np.clip(blended * 255.0 + 0.5, 0, 255).astype(np.uint8)), mask

    def face_box(self, image: Image.Image) -> tuple[float, float, float, float]:
        faces = self.finder(image)
        if faces:  # the face's square: the box the ellipse was shaped for (eyebrows to mouth)
            return square_box(faces[0])
        w, h = image.size
        return (FALLBACK_BOX[0] * w, FALLBACK_BOX[1] * h, FALLBACK_BOX[2] * w, FALLBACK_BOX[3] * h)


def face_mask(shape: tuple[int, int], box: tuple[float, float, float, float], rng: np.random.Generator,
              deform: float = 0.08) -> np.ndarray:
    """A soft, randomly deformed face-shaped mask (HxW float32 in [0, 1]) around `box` (left, top, right, bottom)."""
    height, width = shape
    left, top, right, bottom = box
    side = max(right - left, bottom - top, 4.0)
    # A Haar box runs from the eyebrows to the mouth: the face reaches further down, to the chin.
    centre = ((left + right) / 2 + rng.uniform(-0.05, 0.05) * side,
              (top + bottom) / 2 + rng.uniform(0.0, 0.12) * side)
    axes = ((right - left) / 2 * rng.uniform(0.75, 1.05), (bottom - top) / 2 * rng.uniform(0.95, 1.3))
    mask = ellipse(shape, centre, axes, float(rng.uniform(-12, 12)))
    # Smooth random deformation: a coarse displacement field, interpolated up to the picture.
    amplitude = deform * side
    grid = rng.uniform(-amplitude, amplitude, size=(2, 5, 5)).astype(np.float32)
    dx, dy = (cv2.resize(g, (width, height), interpolation=cv2.INTER_CUBIC) for g in grid)
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    mask = cv2.remap(mask, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    # Grow or shrink a little, then soften the edge by a random amount.
    kernel = max(1, round(rng.uniform(0.0, 0.06) * side)) | 1
    structure = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    mask = cv2.dilate(mask, structure) if rng.random() < 0.5 else cv2.erode(mask, structure)
    sigma = rng.uniform(0.02, 0.12) * side
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=max(0.5, sigma))
    peak = float(mask.max())
    if peak <= 1e-6:  # deformed out of the picture: fall back to the plain ellipse, blurred
        mask = cv2.GaussianBlur(ellipse(shape, centre, axes, 0.0, cv2.LINE_8), (0, 0), sigmaX=max(0.5, sigma))
        peak = max(float(mask.max()), 1e-6)
    return np.clip(mask / peak, 0.0, 1.0) * float(rng.choice(BLEND_RATIOS))


def ellipse(shape: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float], angle: float,
            line_type: int = cv2.LINE_AA) -> np.ndarray:
    """A filled ellipse of 1.0 on an HxW float32 canvas of 0.0 (half-axes of at least 2 pixels)."""
    mask = np.zeros(shape, np.float32)
    cv2.ellipse(mask, (round(centre[0]), round(centre[1])), (max(2, round(axes[0])), max(2, round(axes[1]))),
                angle, 0, 360, 1.0, thickness=-1, lineType=line_type)
    return mask


# The hull mask (see the module's docstring); lengths are fractions of the face's side (its landmarks' box).
NO_FOREHEAD = 0.25  # how often the hull stops at the brows
FOREHEAD_RAISE = (0.0, 0.35)  # the oval above the eyes raised by this fraction of its height above them
ELASTIC_SMOOTHNESS = 0.04  # the elastic displacement field's Gaussian width
ELASTIC_AMPLITUDE = (0.005, 0.025)  # its standard deviation
HULL_GROW = 0.06  # erosion or dilation by up to this much
HULL_BLUR = (0.01, 0.05)  # the edge's Gaussian width
DOWN_UP_SCALE = (1 / 3, 0.4, 0.8)  # how often the altered copy is scaled down and back up, and by how much


def landmark_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """The landmarks' bounding box (left, top, right, bottom)."""
    low, high = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def hull_points(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The points whose convex hull is the mask: the face oval with its forehead raised by a random amount, or (one
    time in `1 / NO_FOREHEAD`) the oval up to the brows and the brows."""
    from .face_mesh import BROWS, FACE_OVAL, LEFT_EYE, RIGHT_EYE

    points = np.asarray(points, np.float64)[:, :2]
    right_eye, left_eye = points[list(RIGHT_EYE)].mean(axis=0), points[list(LEFT_EYE)].mean(axis=0)
    centre = (right_eye + left_eye) / 2
    across = (left_eye - right_eye) / max(float(np.linalg.norm(left_eye - right_eye)), 1e-6)
    up = np.array([across[1], -across[0]])  # the face's up, in image coordinates (y down)
    oval = points[list(FACE_OVAL)]
    height = (oval - centre) @ up  # above the eyes: positive
    if rng.random() < NO_FOREHEAD:
        brows = points[list(BROWS)]
        return np.concatenate([oval[height <= float(((brows - centre) @ up).max())], brows])
    return oval + np.clip(height, 0, None)[:, None] * up * rng.uniform(*FOREHEAD_RAISE)


def hull_mask(shape: tuple[int, int], points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A soft mask (HxW float32 in [0, 1]) from the convex hull of Face Mesh landmarks (468×2, image pixels):
    hull, elastic deformation, erosion or dilation, blur, blend ratio."""
    height, width = shape
    left, top, right, bottom = landmark_box(points)
    side = max(right - left, bottom - top, 4.0)
    mask = np.zeros(shape, np.float32)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(hull_points(points, rng)).astype(np.int32)), 1.0, cv2.LINE_AA)
    # Elastic deformation: smoothed random displacements.
    smooth = max(1.0, ELASTIC_SMOOTHNESS * side)
    field = [cv2.GaussianBlur(rng.uniform(-1, 1, size=shape).astype(np.float32), (0, 0), sigmaX=smooth)
             for _ in range(2)]
    amplitude = rng.uniform(*ELASTIC_AMPLITUDE) * side
    dx, dy = (f * (amplitude / max(float(f.std()), 1e-6)) for f in field)
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    deformed = cv2.remap(mask, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    mask = deformed if deformed.max() > 0.5 else mask
    kernel = max(1, round(rng.uniform(0.0, HULL_GROW) * side)) | 1
    structure = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    grown = cv2.dilate(mask, structure) if rng.random() < 0.5 else cv2.erode(mask, structure)
    mask = grown if grown.max() > 0.5 else mask
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=max(0.5, rng.uniform(*HULL_BLUR) * side))
    peak = max(float(mask.max()), 1e-6)
    return np.clip(mask / peak, 0.0, 1.0) * float(rng.choice(BLEND_RATIOS))


def down_up_scale(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sometimes (`DOWN_UP_SCALE`) the picture scaled down and back up: the detail a resampled face lacks."""
    chance, low, high = DOWN_UP_SCALE
    if rng.random() >= chance:
        return photo
    height, width = photo.shape[:2]
    factor = rng.uniform(low, high)
    small = cv2.resize(photo, (max(1, round(width * factor)), max(1, round(height * factor))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


class CachedLandmarks:
    """Picture → its Face Mesh landmarks (468×2) or None: from a `LandmarkCache`, else Face Mesh at once (its file
    read on the first miss, in each worker process), or None for every miss when `mesh_path` is None."""

    def __init__(self, cache, mesh_path: str | Path | None = None):
        self.cache, self.mesh_path = cache, mesh_path
        self._mesh = None
        self.hits = self.misses = 0

    def __getstate__(self):  # DataLoader workers: the cache travels, the network is read again where needed
        return {**self.__dict__, "_mesh": None}

    def __call__(self, image: Image.Image) -> np.ndarray | None:
        from .face_mesh import FaceMesh, face_landmarks

        found = self.cache.get(image)
        if found is not False:
            self.hits += 1
            return found
        self.misses += 1
        if self.misses == 1:
            logger.info("a picture not in the landmark cache (a face-crop view, or not a training image): Face Mesh "
                        "runs on it now%s", "" if self.mesh_path else " (no file given: the ellipse mask instead)")
        if self.mesh_path is None:
            return None
        if self._mesh is None:
            self._mesh = FaceMesh.from_tflite(self.mesh_path)
        found = face_landmarks(self._mesh, image)
        return found.points[:, :2] if found is not None else None


def pseudo_fake_blend(mask: str = "ellipse", dataset=None, cache_path: str | Path | None = None,
                      mesh_path: str | Path | None = None) -> SelfBlend:
    """The blend for train.py's --pseudo-fake-mask: `ellipse`, or `hull` with the landmarks of `dataset`'s real
    photos, computed once into `cache_path` (Face Mesh from `mesh_path`) and read from it after."""
    if mask == "ellipse":
        return SelfBlend()
    if mask != "hull":
        raise ValueError(f"pseudo-fake mask {mask!r}: choose one of {', '.join(MASKS)}")
    from detector.model import LABEL_NAMES

    from .face_mesh import DEFAULT_PATH, FaceMeshError, LandmarkCache, dataset_items, missing_file_message

    mesh_path = Path(mesh_path or DEFAULT_PATH)
    if not mesh_path.is_file():
        raise FaceMeshError(missing_file_message(mesh_path))
    cache = (LandmarkCache.build(cache_path, dataset_items(dataset, LABEL_NAMES.index("real")), mesh_path)
             if dataset is not None else LandmarkCache([], [], np.zeros((0, 468, 2), np.float32)))
    return SelfBlend(landmarks=CachedLandmarks(cache, mesh_path))


def alter(photo: np.ndarray, box: tuple[float, float, float, float], rng: np.random.Generator,
          max_shift: float = 0.03, max_scale: float = 0.05) -> np.ndarray:
    """The photo (HxWx3 float in [0, 1]) slightly changed in colour, tone, sharpness, scale and position."""
    out = photo.copy()
    # Colour and tone: a per-channel shift, brightness/contrast, saturation.
    out = out + rng.uniform(-0.06, 0.06, size=3).astype(np.float32)
    mean = out.mean()
    out = (out - mean) * rng.uniform(0.85, 1.15) + mean + rng.uniform(-0.06, 0.06)
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.8, 1.2)
    # Sharpness: blur or sharpen (what a different camera or a resample does to the pasted face).
    choice = rng.random()
    if choice < 0.4:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=rng.uniform(0.4, 1.5))
    elif choice < 0.7:
        soft = cv2.GaussianBlur(out, (0, 0), sigmaX=rng.uniform(0.6, 1.5))
        out = out + (out - soft) * rng.uniform(0.3, 1.0)
    # Geometry: scale about the face's centre, and a shift of a few pixels.
    left, top, right, bottom = box
    side = max(right - left, bottom - top, 4.0)
    if rng.random() < 0.75:
        centre = ((left + right) / 2, (top + bottom) / 2)
        matrix = cv2.getRotationMatrix2D(centre, 0.0, float(rng.uniform(1 - max_scale, 1 + max_scale)))
        matrix[:, 2] += rng.uniform(-max_shift, max_shift, size=2) * side
        out = cv2.warpAffine(out, matrix, (photo.shape[1], photo.shape[0]), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def example_sheet(paths: list, output, seed: int = 0, blend: SelfBlend | None = None) -> None:
    """A picture for the docs: each row a real photo, its mask and the pseudo-fake made from it; with landmarks
    (the hull mask), the photo with its Face Mesh landmarks (the face oval in red) in place of the difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .face_mesh import FACE_OVAL

    blend = blend or SelfBlend()
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(paths), 4, figsize=(8, 2.1 * len(paths)), squeeze=False)
    for row, path in zip(axes, paths):
        photo = open_file_rgb(path)
        fake, mask = blend(photo, rng)
        small = photo.resize(fake.size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        points = blend.landmarks(photo) if blend.landmarks is not None else None
        if points is not None:
            panels = [(small, "real photo"), (small, "Face Mesh landmarks"), (mask, f"hull mask (peak {mask.max():.2f})"),
                      (fake, "pseudo-fake")]
        else:
            difference = np.abs(np.asarray(fake, np.float32) - np.asarray(small, np.float32)).mean(axis=2)
            panels = [(small, "real photo"), (mask, "blend mask"), (fake, "pseudo-fake"),
                      (difference / max(1.0, difference.max()), "|difference|")]
        for i, (ax, (picture, title)) in enumerate(zip(row, panels)):
            ax.imshow(picture, cmap="gray" if not isinstance(picture, Image.Image) else None, vmin=0, vmax=1)
            if points is not None and i == 1:
                xy = np.asarray(points) * (small.width / photo.width)
                ax.scatter(xy[:, 0], xy[:, 1], s=0.3, c="cyan", linewidths=0)
                oval = xy[list(FACE_OVAL) + [FACE_OVAL[0]]]
                ax.plot(oval[:, 0], oval[:, 1], c="red", linewidth=0.8)
                ax.set_xlim(-0.5, small.width - 0.5)
                ax.set_ylim(small.height - 0.5, -0.5)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description="Draw self-blended pseudo-fakes made from real photos.")
    parser.add_argument("images", nargs="+", help="real face photos")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mask", choices=MASKS, default="ellipse", help="the pseudo-fake mask (train.py's "
                        "--pseudo-fake-mask)")
    parser.add_argument("--face-mesh", help="with --mask hull: MediaPipe's face_landmark.tflite (default: "
                        "../shared/pretrained/face_landmark/face_landmark.tflite)")
    parser.add_argument("--landmark-cache", help="with --mask hull: a landmark cache (.npz) to read and complete "
                        "(default: none kept)")
    args = parser.parse_args()
    blend = None
    if args.mask == "hull":
        from .face_mesh import DEFAULT_PATH, LandmarkCache

        mesh_path = Path(args.face_mesh or DEFAULT_PATH)
        cache = LandmarkCache.build(args.landmark_cache,
                                    ((str(Path(p).resolve()), lambda p=p: open_file_rgb(p)) for p in args.images),
                                    mesh_path)
        blend = SelfBlend(landmarks=CachedLandmarks(cache, mesh_path))
    example_sheet(args.images, args.output, args.seed, blend)
