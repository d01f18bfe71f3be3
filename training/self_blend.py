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

The mask is an ellipse in the face box (OpenCV's Haar cascade from `detector.faces`; a central box when
no face is found, which on the tight face crops of the training data is the face anyway), deformed by a
smooth random displacement field, grown or shrunk, blurred by a random amount and scaled by a random
blend ratio. No landmark model installs offline with the pinned torch and numpy, and the paper's
ablation finds the mask's softness and deformation matter more than its exact outline.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from detector.faces import LARGE_FACE_FINDER, FaceFinder

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # as in the SBI paper: often a full blend, sometimes a faint one
# The face box of a tight crop when the cascade finds none: the face fills most of the frame.
FALLBACK_BOX = (0.2, 0.15, 0.8, 0.85)


@dataclass(frozen=True)
class SelfBlend:
    """Callable (RGB PIL image, numpy Generator) → (pseudo-fake RGB PIL image, mask HxW float32 in [0, 1]).

    Blending happens at most `work_side` pixels a side (the picture is scaled down first when larger):
    training sees 128-288 px faces, and the blend costs a few milliseconds there."""

    work_side: int = 320
    finder: FaceFinder = LARGE_FACE_FINDER
    max_shift: float = 0.03  # of the face box's side
    max_scale: float = 0.05  # ±, of the altered copy's size
    deform: float = 0.08  # displacement field amplitude, of the face box's side

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> tuple[Image.Image, np.ndarray]:
        rng = rng if rng is not None else np.random.default_rng(random.getrandbits(64))
        image = image.convert("RGB")
        if max(image.size) > self.work_side:
            scale = self.work_side / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BICUBIC, reducing_gap=3.0)
        photo = np.asarray(image, dtype=np.float32) / 255.0
        box = self.face_box(image)
        mask = face_mask(photo.shape[:2], box, rng, self.deform)
        altered = alter(photo, box, rng, self.max_shift, self.max_scale)
        blended = altered * mask[..., None] + photo * (1.0 - mask[..., None])
        return Image.fromarray(np.clip(blended * 255.0 + 0.5, 0, 255).astype(np.uint8)), mask

    def face_box(self, image: Image.Image) -> tuple[float, float, float, float]:
        faces = self.finder(image)
        if faces:
            return tuple(float(v) for v in faces[0])
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
    """A picture for the docs: each row a real photo, its mask and the pseudo-fake made from it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from detector.images import open_file_rgb

    blend = blend or SelfBlend()
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(paths), 4, figsize=(8, 2.1 * len(paths)), squeeze=False)
    for row, path in zip(axes, paths):
        photo = open_file_rgb(path)
        fake, mask = blend(photo, rng)
        small = photo.resize(fake.size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        difference = np.abs(np.asarray(fake, np.float32) - np.asarray(small, np.float32)).mean(axis=2)
        panels = [(small, "real photo"), (mask, "blend mask"), (fake, "pseudo-fake"),
                  (difference / max(1.0, difference.max()), "|difference|")]
        for ax, (picture, title) in zip(row, panels):
            ax.imshow(picture, cmap="gray" if not isinstance(picture, Image.Image) else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Draw self-blended pseudo-fakes made from real photos.")
    parser.add_argument("images", nargs="+", help="real face photos")
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    example_sheet(args.images, args.output, args.seed)
