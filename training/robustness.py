"""Perturbations a photo meets on its way to a user: re-compression, resizing, blur, screenshots, another framing.

Each is a pure function PIL image → PIL image; `training.evaluate --robustness` measures ROC-AUC under each.
"""
from __future__ import annotations

from PIL import Image, ImageFilter

from detector.faces import find_faces
from detector.images import reencode_jpeg

from .data import ALIGNED_CENTRE_X, ALIGNED_CENTRE_Y, ALIGNED_WIDTH, aligned_box, crop_mirrored


def jpeg(quality: int):
    return lambda image: reencode_jpeg(image, quality)


def downscale(factor: float):
    def perturb(image: Image.Image) -> Image.Image:
        size = (max(16, round(image.width * factor)), max(16, round(image.height * factor)))
        return image.resize(size, Image.Resampling.BICUBIC)

    return perturb


def blur(sigma: float):
    return lambda image: image.filter(ImageFilter.GaussianBlur(sigma))


def screenshot(image: Image.Image) -> Image.Image:
    """Shown at 0.8× on a screen, sharpened by the display pipeline, captured as PNG-like pixels."""
    small = image.resize((max(16, round(image.width * 0.8)), max(16, round(image.height * 0.8))), Image.Resampling.BILINEAR)
    return small.filter(ImageFilter.UnsharpMask(radius=1.5, percent=80, threshold=2))


def crop(fraction: float):
    """A tighter framing: the centred square of `fraction` of the shorter side (the face fills more of it)."""
    def perturb(image: Image.Image) -> Image.Image:
        side = max(16, round(min(image.size) * fraction))
        left, top = (image.width - side) // 2, (image.height - side) // 2
        return image.crop((left, top, left + side, top + side))

    return perturb


def border(fraction: float):
    """A wider framing: `fraction` of each side added all round, filled by mirroring (as FFHQ's alignment pads)."""
    def perturb(image: Image.Image) -> Image.Image:
        pad_x, pad_y = round(image.width * fraction), round(image.height * fraction)
        return crop_mirrored(image, (-pad_x, -pad_y, image.width + pad_x, image.height + pad_y))

    return perturb


ALIGNED_MIDDLE = tuple(sum(bounds) / 2 for bounds in (ALIGNED_WIDTH, ALIGNED_CENTRE_X, ALIGNED_CENTRE_Y))


def aligned(image: Image.Image) -> Image.Image:
    """Framed around its face as FFHQ and CelebA-HQ align their photographs (the middle of the aligned view's
    ranges, training.data.ALIGNED_*), mirrored where the frame leaves the picture; unchanged where no face is found.
    A real photo so framed is a CelebA-HQ-like photograph, the framing all of the shared data's GAN faces come in."""
    faces = find_faces(image)
    if not faces:
        return image
    return crop_mirrored(image, aligned_box(faces[0], *ALIGNED_MIDDLE))


PERTURBATIONS = {
    "jpeg_q95": jpeg(95),
    "jpeg_q75": jpeg(75),
    "jpeg_q50": jpeg(50),
    "downscale_0.5x": downscale(0.5),
    "downscale_0.25x": downscale(0.25),
    "blur_sigma1": blur(1.0),
    "blur_sigma2": blur(2.0),
    "screenshot": screenshot,
    "crop_0.7": crop(0.7),
    "border_0.2": border(0.2),
    "aligned": aligned,
}
