"""Image → normalised tensor, in one resize, with the geometry needed to map a CAM back.

The model's own data config (input size, crop_pct, mean/std, interpolation) drives it, so the
app, the CLI, evaluation and validation during training all see pixels prepared the same way.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from timm.data import resolve_model_data_config

RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}


def data_config(model: torch.nn.Module) -> dict:
    return resolve_model_data_config(model)


def crop_box(width: int, height: int, config: dict) -> tuple[float, float, float, float]:
    """The region of the original image the model sees: timm's resize-shorter-side then center crop."""
    _, out_h, out_w = config["input_size"]
    scale_size = math.floor(min(out_h, out_w) / config.get("crop_pct", 1.0))
    factor = min(width, height) / scale_size
    box_w, box_h = min(out_w * factor, width), min(out_h * factor, height)
    left, top = (width - box_w) / 2, (height - box_h) / 2
    return (left, top, left + box_w, top + box_h)


class Preprocessor:
    """Callable PIL image → (3, H, W) float tensor, normalised with the model's mean/std."""

    def __init__(self, config: dict):
        self.config = config
        self.size = (config["input_size"][2], config["input_size"][1])
        self.resample = RESAMPLE.get(config.get("interpolation", "bicubic"), Image.Resampling.BICUBIC)
        self.mean = torch.tensor(config["mean"]).view(3, 1, 1)
        self.std = torch.tensor(config["std"]).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        box = crop_box(image.width, image.height, self.config)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        pixels = rgb.resize(self.size, self.resample, box=box, reducing_gap=3.0)
        tensor = torch.from_numpy(np.asarray(pixels, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        return (tensor - self.mean) / self.std
