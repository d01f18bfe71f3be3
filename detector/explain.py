"""Grad-CAM from a single forward, and its rendering.

For a timm classifier whose head is pooling + linear, the gradient of a class score with respect
to the final feature map needs no backward pass through the backbone: run `forward_features`
once without gradients, then `forward_head` with gradients on the detached features. The
probabilities and the CAM come from the same forward; the result equals textbook Grad-CAM
(hooks + full backward on the last block), which tests/test_explain.py checks.

`stage=-2` explains the stage before the last instead (timm's `feature_info[-2]`, stride 16: a 14×14 grid at 224 px
instead of 7×7): the backbone runs without gradients up to that stage, the last stage and the head
with them, and the gradient flows back through the last stage only. Still one forward; equal to
textbook Grad-CAM on that stage's last block (also checked).
"""
from __future__ import annotations

import functools

from typing import Callable

import cv2
import numpy as np
import torch
from PIL import Image

from .verdicts import VERDICT_COLOURS


def predict_with_cam(
    model: torch.nn.Module, pixels: torch.Tensor, class_index: int | None = None,
    decide: Callable[[torch.Tensor], torch.Tensor] | None = None,
    calibrate: Callable[[torch.Tensor], torch.Tensor] | None = None, stage: int = -1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probabilities [N, C], raw CAMs [N, h, w] ≥ 0, explained class [N]) for a batch of pixels.

    Probabilities are `calibrate(logits)` (the calibration, detector/calibration.py; default softmax); the CAM
    explains the raw class score, which the calibration does not change. The CAM explains `class_index`, else the class
    `decide(probabilities)` picks (default: the most probable one). The backbone runs in its weights'
    dtype (bf16 for the fast path); the head and the gradients are computed in fp32. `stage`: -1 explains the
    last feature map, -2 the one before (finer; the last stage then runs with gradients, in its weights' dtype)."""
    if stage not in CAM_STAGES:
        raise ValueError(f"stage must be one of {CAM_STAGES}, not {stage!r}")
    pixels = pixels.to(next(model.parameters()).dtype)
    if stage == -1:
        with torch.no_grad():
            features = model.forward_features(pixels)
        features = features.detach().float().requires_grad_(True)
        with torch.enable_grad():
            logits = model.forward_head(features)
    else:
        features, logits = _explained_stage_forward(model, pixels)
    with torch.enable_grad():
        probabilities = calibrate(logits.detach()) if calibrate else logits.detach().softmax(dim=1)
        if class_index is not None:
            explained = torch.full((len(logits),), class_index, device=logits.device)
        else:
            explained = decide(probabilities) if decide else probabilities.argmax(dim=1)
        score = logits.gather(1, explained[:, None]).sum()
        (gradients,) = torch.autograd.grad(score, features)
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)
    cams = (weights * features.detach().float()).sum(dim=1).clamp(min=0)
    return probabilities, cams.detach(), explained


CAM_STAGES = (-1, -2)  # the last feature map (stride 32), or the one before it (stride 16)


def _explained_stage_forward(model: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the map of the stage before the last, logits) from one forward: timm's `feature_info[-2]` module's output
    is detached there and made to require gradients, so only the layers after it record a graph (in their weights'
    dtype, bf16 on the fast path; the head in fp32). A model whose parameters require gradients records the whole
    graph too, to no harm but time: the Detector switches them off."""
    captured = []

    def explained(module, inputs, output):
        output = output.detach().requires_grad_(True)
        captured.append(output)
        return output

    handle = model.get_submodule(model.feature_info[-2]["module"]).register_forward_hook(explained)
    try:
        with torch.enable_grad():
            logits = model.forward_head(model.forward_features(pixels).float())
    finally:
        handle.remove()
    return captured[0], logits


def normalise(cam: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (min-max, as pytorch-grad-cam does); a flat map becomes zeros."""
    low, high = float(cam.min()), float(cam.max())
    return ((cam - low) / (high - low) if high > low else np.zeros_like(cam)).astype(np.float32)


def activation_map(cam: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """Place a [0, 1] CAM over `box` (the region the model saw) on a canvas of the image's `size`."""
    width, height = size
    left, top, right, bottom = (round(v) for v in box)
    if (left, top, right, bottom) == (0, 0, width, height):  # the model saw it all: no canvas needed
        return cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((height, width), dtype=np.float32)
    if right > left and bottom > top:
        canvas[top:bottom, left:right] = cv2.resize(cam, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)
    return canvas


JET = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1].copy()  # 256 RGB
JET_PALETTE = JET.flatten().tolist()


def heatmap(cam: np.ndarray) -> Image.Image:
    """[0, 1] map → RGB 'jet' colour image (red = where the model looked most), as a palette image (fast)."""
    levels = np.ascontiguousarray(cv2.convertScaleAbs(np.asarray(cam, dtype=np.float32), alpha=255))
    image = Image.frombuffer("P", (levels.shape[1], levels.shape[0]), levels.tobytes(), "raw", "P", 0, 1)
    image.putpalette(JET_PALETTE)
    return image.convert("RGB")


def overlay(image: Image.Image, heat: Image.Image, alpha: float = 0.45) -> Image.Image:
    """The heat map blended over the original image, at the original resolution."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return Image.blend(rgb, heat if heat.size == image.size else heat.resize(image.size), alpha)


def combined_activation_map(cams: list[tuple[np.ndarray, tuple[float, float, float, float]]], size: tuple[int, int]) -> np.ndarray:
    """Several CAMs (one per face crop), each placed over its own box; where boxes overlap the larger value wins."""
    if not cams:
        return np.zeros((size[1], size[0]), dtype=np.float32)
    canvas, *others = (activation_map(cam, box, size) for cam, box in cams)
    for other in others:
        np.maximum(canvas, other, out=canvas)
    return canvas


@functools.lru_cache(maxsize=16)
def _label_font(size: int):
    """PIL's default font at `size` px, loaded once per size (loading it took milliseconds per picture)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def draw_faces(image: Image.Image, faces: list[tuple[tuple[float, float, float, float], str, float]]) -> Image.Image:
    """A copy of `image` with each (box, verdict, p_fake) drawn: a box coloured by the verdict (red likely fake, amber
    uncertain, green likely real), 'verdict, p(fake) 0.70' above it (a bare "real 0.70" read as 70% real)."""
    from PIL import ImageDraw

    drawn = image.convert("RGB")  # a new image (a copy, for an RGB one): `image` is never drawn on
    draw = ImageDraw.Draw(drawn)
    width = max(2, round(max(image.size) / 250))
    font = _label_font(max(12, round(max(image.size) / 40)))
    for box, label, p_fake in faces:
        colour = VERDICT_COLOURS.get(label, (107, 114, 128))
        left, top, right, bottom = (round(v) for v in box)
        draw.rectangle((left, top, right - 1, bottom - 1), outline=colour, width=width)
        text = f"{label}, p(fake) {min(max(p_fake, 0.01), 0.99):.2f}"  # never 1.00 or 0.00: no certainty
        text_box = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = text_box[2] - text_box[0] + 2 * width, text_box[3] - text_box[1] + 2 * width
        y = top - text_h if top - text_h >= 0 else top  # above the box, or inside it at the top edge
        draw.rectangle((left, y, left + text_w, y + text_h), fill=colour)
        draw.text((left + width - text_box[0], y + width - text_box[1]), text, fill=(255, 255, 255), font=font)
    return drawn
