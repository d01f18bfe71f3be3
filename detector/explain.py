"""Grad-CAM at the last feature map from a single forward, and its rendering.

For a timm classifier whose head is pooling + linear, the gradient of a class score with respect
to the final feature map needs no backward pass through the backbone: run `forward_features`
once without gradients, then `forward_head` with gradients on the detached features. The
probabilities and the CAM come from the same forward; the result equals textbook Grad-CAM
(hooks + full backward on the last block), which tests/test_explain.py checks.
"""
from __future__ import annotations

import contextlib

import cv2
import numpy as np
import torch
from PIL import Image


def predict_with_cam(
    model: torch.nn.Module, pixels: torch.Tensor, class_index: int | None = None, autocast: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probabilities [N, C], raw CAMs [N, h, w] ≥ 0, explained class [N]) for a batch of pixels."""
    device_type = pixels.device.type
    precision = torch.autocast(device_type, dtype=autocast) if autocast else contextlib.nullcontext()
    with torch.no_grad(), precision:
        features = model.forward_features(pixels)
    features = features.detach().float().requires_grad_(True)
    with torch.enable_grad():
        logits = model.forward_head(features)
        if class_index is None:
            explained = logits.argmax(dim=1)
        else:
            explained = torch.full((len(logits),), class_index, device=logits.device)
        score = logits.gather(1, explained[:, None]).sum()
        (gradients,) = torch.autograd.grad(score, features)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cams = (weights * features).sum(dim=1).clamp(min=0)
    return logits.detach().softmax(dim=1), cams.detach(), explained


def normalise(cam: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (min-max, as pytorch-grad-cam does); a flat map becomes zeros."""
    low, high = float(cam.min()), float(cam.max())
    return ((cam - low) / (high - low) if high > low else np.zeros_like(cam)).astype(np.float32)


def activation_map(cam: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """Place a [0, 1] CAM over `box` (the region the model saw) on a canvas of the image's `size`."""
    width, height = size
    canvas = np.zeros((height, width), dtype=np.float32)
    left, top, right, bottom = (round(v) for v in box)
    if right > left and bottom > top:
        canvas[top:bottom, left:right] = cv2.resize(cam, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)
    return canvas


def heatmap(cam: np.ndarray) -> Image.Image:
    """[0, 1] map → RGB 'jet' colour image (red = where the model looked most)."""
    coloured = cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET)
    return Image.fromarray(cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB))


def overlay(image: Image.Image, heat: Image.Image, alpha: float = 0.45) -> Image.Image:
    """The heat map blended over the original image, at the original resolution."""
    return Image.blend(image.convert("RGB"), heat.resize(image.size), alpha)
