"""`Detector`: the one way through from an image to an `Analysis` (probabilities, label, CAM)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from . import explain
from .errors import DetectorError
from .images import ImageSource, load_image
from .model import BUNDLED_MODEL, LoadedModel, load_model
from .preprocess import Preprocessor, crop_box, data_config


@dataclass
class Analysis:
    """What the model says about one image. `cam` is the [0, 1] Grad-CAM over `box` at feature resolution."""

    label: str
    probabilities: dict[str, float]
    explained: str
    cam: np.ndarray = field(repr=False)
    box: tuple[float, float, float, float]
    image: Image.Image = field(repr=False)

    @property
    def p_fake(self) -> float:
        return self.probabilities["fake"]

    def activation_map(self) -> np.ndarray:
        """The CAM at the original image's resolution."""
        return explain.activation_map(self.cam, self.box, self.image.size)

    def render(self, max_side: int | None = None) -> tuple[Image.Image, Image.Image, Image.Image]:
        """original → activation map → overlay, at the original resolution or scaled once to fit `max_side`."""
        image, box = self.image, self.box
        if max_side and max(image.size) > max_side:
            scale = max_side / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BILINEAR, reducing_gap=2.0)
            box = tuple(value * scale for value in box)
        heat = explain.heatmap(explain.activation_map(self.cam, box, image.size))
        return image, heat, explain.overlay(image, heat)

    def to_dict(self) -> dict:
        return {"label": self.label, "probabilities": dict(self.probabilities), "explained_class": self.explained}


class Detector:
    """Real-or-fake classifier with Grad-CAM. Build it with `Detector.from_pretrained(source)`."""

    def __init__(self, loaded: LoadedModel, device: str | None = None, batch_size: int = 16):
        self.loaded = loaded
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = loaded.model.to(self.device).eval()
        self.labels = loaded.label_names
        self.preprocess = Preprocessor(data_config(self.model))
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None, **kwargs) -> "Detector":
        """A Hub id (`hf-hub:owner/name` or `owner/name`) or a local Hub-layout folder; default: $DETECTOR_MODEL or the bundled model."""
        return cls(load_model(source), **kwargs)

    @property
    def name(self) -> str:
        """Where the model came from, as a person would say it."""
        folder = self.loaded.folder
        if Path(folder).resolve() == BUNDLED_MODEL.resolve():
            return f"bundled model ({BUNDLED_MODEL.name})"
        return self.loaded.source

    def warm_up(self) -> None:
        """One throw-away analysis, so the first person to upload does not pay for lazy initialisation."""
        self.analyze(Image.new("RGB", self.preprocess.size, (128, 128, 128)))

    def analyze(self, image: ImageSource, target: str | None = None) -> Analysis:
        """Analyse one image; `target` ('real'/'fake') chooses the class the CAM explains (default: the predicted one)."""
        return self.analyze_batch([image], target)[0]

    def analyze_batch(self, images: Sequence[ImageSource], target: str | None = None) -> list[Analysis]:
        """Analyse many images, `batch_size` at a time; raises DetectorError on the first bad input."""
        loaded = [load_image(image) for image in images]
        class_index = self._class_index(target)
        results: list[Analysis] = []
        for start in range(0, len(loaded), self.batch_size):
            results.extend(self._run(loaded[start : start + self.batch_size], class_index))
        return results

    def _class_index(self, target: str | None) -> int | None:
        if target is None:
            return None
        if target not in self.labels:
            raise DetectorError(f"Unknown class {target!r}; choose one of {self.labels}.")
        return self.labels.index(target)

    def _run(self, images: Iterable[Image.Image], class_index: int | None) -> list[Analysis]:
        images = list(images)
        pixels = torch.stack([self.preprocess(image) for image in images]).to(self.device)
        probabilities, cams, explained = explain.predict_with_cam(self.model, pixels, class_index)
        probabilities, cams = probabilities.cpu().numpy(), cams.cpu().numpy()
        return [
            Analysis(
                label=self.labels[int(np.argmax(probs))],
                probabilities={name: float(p) for name, p in zip(self.labels, probs)},
                explained=self.labels[int(index)],
                cam=explain.normalise(cam),
                box=crop_box(image.width, image.height, self.preprocess.config),
                image=image,
            )
            for image, probs, cam, index in zip(images, probabilities, cams, explained.tolist())
        ]
