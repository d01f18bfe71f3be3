"""`Detector`: the one way through from an image to an `Analysis` (probabilities, label, CAM)."""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from timm.layers import BatchNormAct2d
from torch.nn.utils.fusion import fuse_conv_bn_eval

from . import explain
from .calibration import Calibration
from .errors import DetectorError
from .faces import DEFAULT_MARGIN, MAX_MARGIN, Box, Face, FaceFinder, crop_box as face_crop_box
from .images import ImageSource, load_image
from .model import BUNDLED_MODEL, PRECISIONS, LoadedModel, conv_bn_pairs, load_model
from .preprocess import Preprocessor, crop_box, data_config
from .verdicts import DEFAULT_LOWER_THRESHOLD, UNCERTAIN, verdict_of


logger = logging.getLogger(__name__)
NO_FACE = "no face found: whole image analysed; the model and its thresholds were fitted on face crops"
WHOLE_IMAGE = "whole image analysed as asked; the model and its thresholds were fitted on face crops"


@dataclass
class Analysis:
    """What the model says about one image. `cam` is the [0, 1] Grad-CAM over `box` at feature resolution.

    With face search (`analyze(..., faces=True)`), `faces` holds one `FaceResult` per face found and the
    image's verdict is its most suspicious face's (highest p_fake): label, probabilities, cam and box are
    that face's, box in this image's pixels. When no face is found the whole image is analysed and `note`
    says so (`NO_FACE`).
    """

    label: str
    probabilities: dict[str, float]
    explained: str
    cam: np.ndarray = field(repr=False)
    box: tuple[float, float, float, float]
    image: Image.Image = field(repr=False)
    faces: list["FaceResult"] = field(default_factory=list)
    note: str | None = None
    verdict: str = UNCERTAIN  # one of VERDICTS, from p_fake and the model's two thresholds

    @classmethod
    def of_faces(cls, image: Image.Image, faces: list["FaceResult"]) -> "Analysis":
        """The image's verdict: its most suspicious face."""
        top = max(faces, key=lambda face: face.p_fake)
        return cls(label=top.label, probabilities=dict(top.probabilities), explained=top.analysis.explained,
                   cam=top.analysis.cam, box=top.cam_box, image=image, faces=faces, verdict=top.verdict)

    @property
    def p_fake(self) -> float:
        return self.probabilities["fake"]

    def _cams(self, scale: float = 1.0) -> list[tuple[np.ndarray, tuple[float, float, float, float]]]:
        pairs = [(face.analysis.cam, face.cam_box) for face in self.faces] or [(self.cam, self.box)]
        return [(cam, tuple(value * scale for value in box)) for cam, box in pairs]

    def activation_map(self) -> np.ndarray:
        """The CAM at the original image's resolution (every face's CAM in its place, with face search)."""
        return explain.combined_activation_map(self._cams(), self.image.size)

    def render(self, max_side: int | None = None, boxes: bool = True) -> tuple[Image.Image, Image.Image, Image.Image]:
        """original → activation map → overlay, at the original resolution or scaled once to fit `max_side`.

        With `boxes`, each face found is framed on the original and the overlay, coloured by its verdict
        (red likely fake, amber uncertain, green likely real) and labelled with its p_fake."""
        image, scale = self.image, 1.0
        if max_side and max(image.size) > max_side:
            scale = max_side / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.BILINEAR, reducing_gap=2.0)
        heat = explain.heatmap(explain.combined_activation_map(self._cams(scale), image.size))
        overlay = explain.overlay(image, heat)
        if boxes and self.faces:
            frames = [(tuple(v * scale for v in face.box), face.verdict, face.p_fake) for face in self.faces]
            image, overlay = explain.draw_faces(image, frames), explain.draw_faces(overlay, frames)
        return image, heat, overlay

    def to_dict(self) -> dict:
        return {"label": self.label, "verdict": self.verdict, "probabilities": dict(self.probabilities),
                "explained_class": self.explained, "faces": [face.to_dict() for face in self.faces], "note": self.note}


@dataclass
class FaceResult:
    """One face: where it is, the square crop around it that was analysed, and that crop's analysis."""

    face: Face  # as found: its box (left, top, right, bottom) and five landmarks, in the image's pixels
    crop: Box  # the region analysed: the square from the landmarks with its margin, in the image's pixels
    analysis: Analysis = field(repr=False)  # of the crop; its own `box` is in the crop's pixels

    @property
    def box(self) -> Box:
        return self.face.box

    @property
    def label(self) -> str:
        return self.analysis.label

    @property
    def probabilities(self) -> dict[str, float]:
        return self.analysis.probabilities

    @property
    def verdict(self) -> str:
        return self.analysis.verdict

    @property
    def p_fake(self) -> float:
        return self.analysis.p_fake

    @property
    def cam_box(self) -> tuple[float, float, float, float]:
        """Where this face's CAM lies in the image's pixels."""
        left, top, right, bottom = self.analysis.box
        return (self.crop[0] + left, self.crop[1] + top, self.crop[0] + right, self.crop[1] + bottom)

    def to_dict(self) -> dict:
        return {"box": list(self.box), "landmarks": self.face.to_dict()["landmarks"], "crop": list(self.crop),
                "label": self.label, "verdict": self.verdict, "probabilities": dict(self.probabilities)}


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (AVX512-BF16/AMX CPUs, Ampere+ GPUs); elsewhere it is emulated and slow."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def served_dtype(precision: str, fitted_in: str | None, device: torch.device) -> torch.dtype:
    """The backbone's dtype for `precision` ("auto", "fp32", "bf16"). "auto" computes scores as the stored threshold's
    were computed (`fitted_in`: the config's `calibration.precision`, recorded by training.evaluate --calibrate): in
    fp32 if they were; in bf16 if they were and `device` computes it natively, else in fp32 with a warning (a
    threshold sits where a few hundredths of p(fake) move verdicts); without a record, bf16 wherever it is native."""
    if precision != "auto":
        return torch.bfloat16 if precision == "bf16" else torch.float32
    if fitted_in == "fp32":
        return torch.float32
    native = native_bf16(device)
    if fitted_in == "bf16" and not native:
        logger.warning("the threshold was fitted on bf16 scores and %s has no native bf16: scoring in fp32, where "
                       "p(fake) may differ from the fitted scores by a few hundredths near the threshold", device)
    return torch.bfloat16 if native else torch.float32


def fold_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Fold each eval-mode BatchNorm into the convolution whose output it normalises (the same function, one pass
    over memory less per layer: 5% faster at batch 1, 10% at batch 16 on a 2-core CPU for ResNeXt-50). The pairs
    come from the forward's own order (`conv_bn_pairs`); a timm BatchNormAct2d keeps its activation."""
    for conv_name, conv, norm_name, norm in conv_bn_pairs(model):
        rest = torch.nn.Sequential(norm.drop, norm.act) if isinstance(norm, BatchNormAct2d) else torch.nn.Identity()
        model.set_submodule(conv_name, fuse_conv_bn_eval(conv, norm))
        model.set_submodule(norm_name, rest)
    return model


class Detector:
    """Real-or-fake classifier with Grad-CAM. Build it with `Detector.from_pretrained(source)`."""

    def __init__(self, loaded: LoadedModel, device: str | None = None, batch_size: int = 16,
                 face_finder: FaceFinder | None = None, face_margin: float | None = None, precision: str = "auto",
                 copy_model: bool = True, cam_stage: int | None = None, calibrated: bool = True):
        """`face_margin`: the margin round each face found, as a fraction of its side (default: the one the stored
        threshold was fitted with, `calibration.face_margin`, else `faces.DEFAULT_MARGIN`).
        `cam_stage`: -1 explains the last feature map (stride 32: 7×7 at 224 px), -2 the stage before it (stride 16:
        14×14, finer); default: the model's `cam_stage` (training.publish --cam-faithfulness: the one measured more
        faithful for it), else -1.
        `copy_model=False` lets the detector fold, cast and move `loaded.model` itself instead of a copy
        (`from_pretrained` does: nobody else holds that model); a model handed in is never changed.
        `calibrated=False` scores with the model's own probabilities and no threshold (argmax), whatever its config
        stores: what a calibration is fitted on (training.evaluate --calibrate)."""
        self.loaded = loaded
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = copy.deepcopy(loaded.model) if copy_model else loaded.model
        # Inference only: no parameter needs a gradient (Grad-CAM's are taken with respect to a feature map).
        self.model = fold_batch_norms(model.eval()).requires_grad_(False).to(self.device)
        if precision not in PRECISIONS:
            raise DetectorError(f"precision must be 'auto', 'fp32' or 'bf16', not {precision!r}")
        # bf16 backbone weights where native (measured on a 2-core CPU at 128 px: 1.2× faster at batch 1, 2× at
        # batch 16, p(fake) within 0.005 of fp32); the classifier stays fp32 for the CAM's gradients. Casting the
        # weights once beats autocast, which re-casts all of them on every call (2× slower at batch 1).
        calibration = loaded.config.get("calibration") or {}  # fitted by training.evaluate --calibrate
        self.dtype = served_dtype(precision, calibration.get("precision"), self.device)
        if not calibrated:  # the raw scores; face search keeps the margin the model is served with
            calibration = {key: calibration[key] for key in ("face_margin",) if key in calibration}
        self.model.to(self.dtype).get_classifier().float()
        self.labels = loaded.label_names
        self.preprocess = Preprocessor(data_config(self.model))
        self.batch_size = batch_size
        cam_stage = loaded.config.get("cam_stage", -1) if cam_stage is None else cam_stage
        if cam_stage not in explain.CAM_STAGES:
            raise DetectorError(f"cam_stage must be one of {explain.CAM_STAGES} (-1: last feature map, -2: the finer one "
                                f"before it), not {cam_stage!r}")
        self.cam_stage = cam_stage
        self.find_faces = face_finder or FaceFinder()
        self.face_margin = float(calibration.get("face_margin", DEFAULT_MARGIN) if face_margin is None else face_margin)
        if not 0 <= self.face_margin <= MAX_MARGIN:
            raise DetectorError(f"face_margin must be from 0 to {MAX_MARGIN} (a fraction of the face's side), "
                                f"not {face_margin!r}")
        self.calibration = Calibration.from_config(calibration)  # logits → calibrated probabilities
        self.threshold: float | None = calibration.get("threshold")  # p_fake at or above → fake; None: argmax
        # Below it the verdict is "likely real"; fitted by training.evaluate --calibrate (at most target_fake_miss of
        # the validation fakes fall below it), else DEFAULT_LOWER_THRESHOLD (never above the threshold).
        self.lower_threshold: float = float(calibration.get("lower_threshold",
                                                            min(DEFAULT_LOWER_THRESHOLD, self.fake_threshold)))
        self.target_fake_miss: float | None = calibration.get("target_fake_miss")
        self.target_fpr: float | None = calibration.get("target_fpr")
        # True: target_fpr is the mean over the kinds (sources) of real photo, each counting equally; then fpr_all_reals
        # is the share of all validation reals the threshold flags.
        self.target_fpr_per_source: bool = calibration.get("target_fpr_per_source", False)
        self.fpr_all_reals: float | None = calibration.get("fpr_all_reals")
        self.fakes_caught: float | None = calibration.get("fakes_caught")  # share of the validation fakes flagged
        self.training_images: int | None = loaded.config.get("training_images")  # written by training.publish
        # Measured by leave-one-source-out (training.publish --leave-one-out): kind of real photo → share called fake.
        self.unseen_reals: dict[str, float] = dict(loaded.config.get("unseen_reals_called_fake") or {})
        logger.info("model %s from %s: %s weights on %s, input %s px, threshold %s", loaded.source, loaded.folder,
                    str(self.dtype).removeprefix("torch."), self.device, self.preprocess.size[0],
                    "argmax" if self.threshold is None else f"{self.threshold:.4f}")

    @property
    def precision(self) -> str:
        """"bf16" or "fp32": the dtype the backbone computes in, by the names `precision` takes."""
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None, **kwargs) -> "Detector":
        """A Hub id (`hf-hub:owner/name` or `owner/name`) or a local Hub-layout folder; default: $DETECTOR_MODEL or the bundled model."""
        return cls(load_model(source), copy_model=False, **kwargs)

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

    def analyze(self, image: ImageSource, target: str | None = None, faces: bool = True) -> Analysis:
        """Analyse one image; `target` ('real'/'fake') chooses the class the CAM explains (default: the predicted one).

        By default the faces are found first and each is analysed (see `analyze_batch`), the path the thresholds were
        fitted on; `faces=False` judges the whole image."""
        return self.analyze_batch([image], target, faces)[0]

    def analyze_batch(self, images: Sequence[ImageSource], target: str | None = None, faces: bool = True) -> list[Analysis]:
        """Analyse many images, `batch_size` at a time; raises DetectorError on the first bad input.

        `faces=True` (the default, the path the thresholds were fitted on): find the faces in each image
        (detector/faces.py), analyse the square crop around each (`faces.crop_box`: from its landmarks, with
        `face_margin` of its side all round), all crops of all images batched together; each image's verdict is its
        most suspicious face. An image with no face found is analysed whole and its `note` says so (`NO_FACE`).
        `faces=False` analyses each image whole, and its `note` says that the thresholds were fitted on face crops
        (`WHOLE_IMAGE`)."""
        loaded = [load_image(image) for image in images]
        class_index = self._class_index(target)
        if not faces:
            analyses = self._analyze_images(loaded, class_index)
            for analysis in analyses:
                analysis.note = WHOLE_IMAGE
            return analyses
        found = [self.find_faces(image) for image in loaded]
        crops = [[face_crop_box(face, image.size, self.face_margin) for face in in_image]
                 for image, in_image in zip(loaded, found)]
        pictures = [picture for image, boxes in zip(loaded, crops) for picture in ([image.crop(c) for c in boxes] or [image])]
        analysed = iter(self._analyze_images(pictures, class_index))
        results = []
        for image, in_image, regions in zip(loaded, found, crops):
            if in_image:
                results.append(Analysis.of_faces(image, [FaceResult(face, crop, next(analysed))
                                                         for face, crop in zip(in_image, regions)]))
            else:
                whole = next(analysed)
                whole.note = NO_FACE
                results.append(whole)
        return results

    def _analyze_images(self, images: list[Image.Image], class_index: int | None) -> list[Analysis]:
        results: list[Analysis] = []
        for start in range(0, len(images), self.batch_size):
            results.extend(self._run(images[start : start + self.batch_size], class_index))
        return results

    def _class_index(self, target: str | None) -> int | None:
        if target is None:
            return None
        if target not in self.labels:
            raise DetectorError(f"Unknown class {target!r}; choose one of {self.labels}.")
        return self.labels.index(target)

    def calibrated(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities [N, 2] of two-class logits (the config's calibration map)."""
        return self.calibration.probabilities(logits, self.labels.index("fake"))

    def decide(self, probabilities: torch.Tensor) -> torch.Tensor:
        """The verdict per row: fake when p_fake reaches the calibrated threshold, else the most probable class."""
        if self.threshold is None:
            return probabilities.argmax(dim=1)
        fake, real = self.labels.index("fake"), self.labels.index("real")
        return torch.where(probabilities[:, fake] >= self.threshold, fake, real)

    @property
    def fake_threshold(self) -> float:
        """The p(fake) at or above which an image is called fake: the calibrated threshold, else 0.5."""
        return 0.5 if self.threshold is None else float(self.threshold)

    def verdict(self, p_fake: float) -> str:
        """The three-level verdict for a p(fake): likely fake at or above `fake_threshold`, likely real below the
        lower threshold, uncertain between."""
        return verdict_of(p_fake, self.lower_threshold, self.fake_threshold)

    def _run(self, images: Iterable[Image.Image], class_index: int | None) -> list[Analysis]:
        images = list(images)
        pixels = torch.stack([self.preprocess(image) for image in images]).to(self.device)
        probabilities, cams, explained = explain.predict_with_cam(
            self.model, pixels, class_index, decide=self.decide, calibrate=self.calibrated, stage=self.cam_stage)
        verdicts = self.decide(probabilities).tolist()
        probabilities, cams = probabilities.cpu().numpy(), cams.cpu().numpy()
        return [
            Analysis(
                label=self.labels[verdict],
                probabilities={name: float(p) for name, p in zip(self.labels, probs)},
                explained=self.labels[int(index)],
                cam=explain.normalise(cam),
                box=crop_box(image.width, image.height, self.preprocess.config),
                image=image,
                verdict=self.verdict(float(probs[self.labels.index("fake")])),
            )
            for image, probs, cam, index, verdict in zip(images, probabilities, cams, explained.tolist(), verdicts)
        ]
