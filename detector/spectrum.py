"""The frequency view: the log-magnitude 2-D Fourier spectrum of a picture, as a picture.

Generators that up-sample (transposed convolutions, GAN decoders) leave a regular grid in the pixels, which shows
up here as bright periodic peaks away from the centre; camera photos show a smooth fall-off from the centre (low
frequencies) outwards, with a cross from the picture's edges softened by a window. It is a view for people, not
a test: JPEG compression also leaves an 8-pixel grid (peaks at 1/8 of the frequency range), and resizing moves
or hides the peaks.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

SPECTRUM_SIDE = 256  # the spectrum's side; the picture's centre square of this size is transformed at its own pixels


def spectrum(image: Image.Image, side: int = SPECTRUM_SIDE) -> Image.Image:
    """The centred log-magnitude spectrum of `image`'s luminance (Hann-windowed), as an 8-bit greyscale picture
    of `side`×`side` pixels: the centre is the lowest frequency, the edges the highest.

    The centre `side`×`side` square is transformed at the picture's own pixels (resampling would blur the very
    grid the view is for); a smaller picture is enlarged to that square first."""
    gray = image.convert("L")
    if min(gray.size) >= side:
        left, top = (gray.width - side) // 2, (gray.height - side) // 2
        gray = gray.crop((left, top, left + side, top + side))
    else:
        gray = gray.resize((side, side), Image.Resampling.BICUBIC)
    pixels = np.asarray(gray, dtype=np.float64)
    pixels = pixels - pixels.mean()
    window = np.outer(np.hanning(side), np.hanning(side))
    magnitude = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(pixels * window))))
    low, high = np.percentile(magnitude, [1.0, 99.9])
    scaled = np.clip((magnitude - low) / max(high - low, 1e-9), 0.0, 1.0)
    return Image.fromarray((scaled * 255).round().astype(np.uint8), "L")


def analysed_region(analysis) -> Image.Image:
    """What the verdict rests on: the most suspicious face's crop, or the whole image when no face was judged."""
    if analysis.faces:
        return max(analysis.faces, key=lambda face: face.p_fake).analysis.image
    return analysis.image
