"""Load a labelled face dataset with `datasets`, map its labels onto (real, fake), split it, transform it.

SOURCE is a Hub dataset id, a local image folder (one sub-folder per class, or a metadata.csv),
or a CSV file whose image column holds paths relative to the CSV. Every example ends up with an
`image` and a `target` (index into detector.model.LABEL_NAMES); other columns (source, group) stay.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image, ImageFilter
from sklearn.model_selection import StratifiedGroupKFold
from torchvision import transforms as T

from detector.labels import DataError, parse_label_map, resolve_label_map  # noqa: F401  (their home is detector/)
from detector.model import LABEL_NAMES
from detector.faces import DEFAULT_FINDER, Face, FaceFinder, crop_box as face_crop_box, square_box
from detector.atomic import write_text
from detector.images import open_file_rgb, reencode_jpeg
from detector.preprocess import Preprocessor

from .self_blend import SelfBlend

logger = logging.getLogger(__name__)

VALIDATION_SPLITS = ("validation", "valid", "val")


@dataclass
class DataSpec:
    source: str
    image_column: str = "image"
    label_column: str = "label"
    label_map: dict[str, str] | None = None  # dataset label → "real" / "fake"
    group_column: str | None = None  # e.g. the original video: never on both sides of the split
    source_column: str | None = None  # kept for per-source metrics, and used to stratify the split
    val_fraction: float = 0.2
    seed: int = 42
    # > 0: three ways, each source split on its own (train / validation for every choice / test for the published
    # numbers, `split_three`); 0: the two-way split the models before 2026-12-07 were trained and fitted on
    test_fraction: float = 0.0
    hold_out_source: str | None = None  # leave-one-source-out: kept out of training and validation


def add_data_arguments(parser: argparse.ArgumentParser, title: str = "data") -> argparse._ArgumentGroup:
    """The dataset options training and evaluation share (same values → same split)."""
    data = parser.add_argument_group(title)
    data.add_argument("--dataset", required=True, help="Hub dataset id, image folder, or CSV of image paths")
    data.add_argument("--image-column", default="image")
    data.add_argument("--label-column", default="label")
    data.add_argument("--label-map", help="dataset label → real/fake, e.g. 'Real=real,Fake=fake' or '0=real,1=fake'")
    data.add_argument("--group-column", help="split by this column (e.g. original video) so no group is on both sides")
    data.add_argument("--source-column", help="report metrics per source, and stratify the split by it")
    data.add_argument("--val-fraction", type=float, default=0.2)
    data.add_argument("--test-fraction", type=float, default=0.0,
                      help="hold out this fraction of every source as a test split nobody tunes on (split three ways, "
                           "each source on its own, by group; e.g. --val-fraction 0.1 --test-fraction 0.1); default 0: "
                           "the two-way split of earlier runs")
    data.add_argument("--hold-out-source", metavar="SOURCE",
                      help="leave this source out of training and validation, to test on it afterwards")
    return data


def spec_from_args(args: argparse.Namespace) -> DataSpec:
    return DataSpec(
        source=args.dataset, image_column=args.image_column, label_column=args.label_column,
        label_map=parse_label_map(args.label_map), group_column=args.group_column,
        source_column=args.source_column, val_fraction=args.val_fraction, seed=args.seed,
        test_fraction=getattr(args, "test_fraction", 0.0),
        hold_out_source=args.hold_out_source,
    )


def load_raw(spec: DataSpec) -> datasets.DatasetDict:
    """Read SOURCE as a DatasetDict, whatever its form."""
    path = Path(spec.source).expanduser()
    try:
        if path.is_file() and path.suffix == ".csv":
            raw = datasets.load_dataset("csv", data_files=str(path))
            if spec.image_column not in raw["train"].column_names:
                raise DataError(f"{path} has no column {spec.image_column!r} (columns: {raw['train'].column_names})")
            root = path.parent
            raw = raw.map(lambda row: {spec.image_column: str(root / row[spec.image_column])})
            return raw.cast_column(spec.image_column, datasets.Image(decode=False))
        if path.is_dir():
            return datasets.load_dataset("imagefolder", data_dir=str(path))
        if path.exists():
            raise DataError(f"{path} is neither a folder nor a .csv file")
        return datasets.load_dataset(spec.source)
    except DataError:
        raise
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
        raise DataError(f"Could not load dataset {spec.source!r}: {err}") from err


def label_names_of(dataset: datasets.Dataset, column: str) -> list[str]:
    feature = dataset.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return sorted({str(value) for value in dataset[column]})


def with_targets(dataset: datasets.Dataset, spec: DataSpec, both_classes: bool = True) -> datasets.Dataset:
    """Add the `target` column, rename the image column to `image`, check both classes are present (training
    needs both; `both_classes=False` lets evaluation score, say, a folder of real photos alone)."""
    for column in (spec.image_column, spec.label_column, spec.group_column, spec.source_column):
        if column and column not in dataset.column_names:
            hint = (" An image folder needs one sub-folder per class with images in each (e.g. real/ and fake/)."
                    if column == spec.label_column else "")
            raise DataError(f"Dataset has no column {column!r}; its columns are {dataset.column_names}.{hint}")
    names = label_names_of(dataset, spec.label_column)
    to_target = resolve_label_map(names, spec.label_map, spec.label_column)
    feature = dataset.features[spec.label_column]
    as_name = feature.int2str if isinstance(feature, datasets.ClassLabel) else str
    dataset = dataset.map(
        lambda batch: {"target": [to_target[as_name(value)] for value in batch[spec.label_column]]}, batched=True
    )
    dataset = dataset.cast_column("target", datasets.ClassLabel(names=list(LABEL_NAMES)))
    if spec.image_column != "image":
        dataset = dataset.rename_column(spec.image_column, "image")
    counts = np.bincount(dataset["target"], minlength=len(LABEL_NAMES))
    empty = [LABEL_NAMES[i] for i, count in enumerate(counts) if count == 0]
    if len(empty) == len(LABEL_NAMES) or (empty and both_classes):
        raise DataError(f"Class {empty} has zero examples after label mapping (counts: {dict(zip(LABEL_NAMES, counts.tolist()))})")
    return dataset.cast_column("image", datasets.Image(decode=False))


def check_images(dataset: datasets.Dataset) -> None:
    """Open every image once, so a broken file is named now rather than crashing epoch 7."""
    for index, item in enumerate(dataset["image"]):
        name = item.get("path") or f"row {index}"
        try:
            with Image.open(io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]) as image:
                image.load()
        except Exception as err:  # PIL raises many types for a bad file
            raise DataError(f"Unreadable image {name}: {err}") from err


def split_groups(dataset: datasets.Dataset, spec: DataSpec) -> np.ndarray:
    """Each row's group for the splits: the group column's value, or the row's own where it has none (or there is no
    group column)."""
    groups = np.array(dataset[spec.group_column]).astype(str) if spec.group_column else np.arange(len(dataset)).astype(str)
    if spec.group_column:  # rows without a group are their own group
        missing = np.isin(groups, ["", "None", "nan"])
        groups[missing] = np.char.add("row", np.arange(len(dataset))[missing].astype(str))
    return groups


def split(dataset: datasets.Dataset, spec: DataSpec) -> tuple[datasets.Dataset, datasets.Dataset]:
    """A stratified ~80/20 split with a fixed seed; by group when there is a group column."""
    strata = np.array(dataset["target"]).astype(str)
    if spec.source_column:
        strata = np.char.add(np.char.add(strata, ":"), np.array(dataset[spec.source_column]).astype(str))
    groups = split_groups(dataset, spec)
    n_splits = max(2, round(1 / spec.val_fraction))
    largest = int(np.unique(strata, return_counts=True)[1].max())
    if largest < n_splits:  # sklearn would raise a ValueError that does not say what to do
        raise DataError(
            f"Too few images to hold out {spec.val_fraction:.0%} for validation: the largest class"
            f"{'/source' if spec.source_column else ''} has {largest}, the split needs at least {n_splits}. "
            "Add images or raise --val-fraction."
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=spec.seed)
    train_idx, val_idx = next(folds.split(np.zeros(len(dataset)), strata, groups))
    return dataset.select(np.sort(train_idx)), dataset.select(np.sort(val_idx))


def split_three(dataset: datasets.Dataset, spec: DataSpec) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset]:
    """(train, validation, test), each source split on its own into folds of 1/n (n = 1 / the smaller fraction), by
    group (rows without a group are their own) and stratified by label, with a fixed seed; the first folds go to
    validation, the next to test. Each source on its own: adding a source (or rows of a new source) to the data leaves
    every other source's split as it was."""
    n = round(1 / min(spec.val_fraction, spec.test_fraction))
    val_folds, test_folds = round(spec.val_fraction * n), round(spec.test_fraction * n)
    if val_folds + test_folds >= n or abs(val_folds / n - spec.val_fraction) > 1e-6 or abs(test_folds / n - spec.test_fraction) > 1e-6:
        raise DataError(f"--val-fraction {spec.val_fraction:g} and --test-fraction {spec.test_fraction:g} must be whole "
                        f"multiples of 1/{n} leaving some training data (e.g. 0.1 and 0.1)")
    targets = np.array(dataset["target"]).astype(str)
    sources = np.array(dataset[spec.source_column]).astype(str) if spec.source_column else np.zeros(len(dataset)).astype(str)
    groups = split_groups(dataset, spec)
    fold = np.empty(len(dataset), dtype=int)
    for source in sorted(set(sources)):
        rows = np.flatnonzero(sources == source)
        smallest = int(np.unique(targets[rows], return_counts=True)[1].min())
        if smallest < n or len(set(groups[rows])) < n:
            raise DataError(f"source {source!r} has {smallest} images of one class ({len(set(groups[rows]))} groups): "
                            f"a split into folds of 1/{n} needs {n} of each; add images or raise the fractions")
        folds = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=spec.seed)
        for index, (_, held) in enumerate(folds.split(np.zeros(len(rows)), targets[rows], groups[rows])):
            fold[rows[held]] = index
    parts = (fold >= val_folds + test_folds, fold < val_folds, (fold >= val_folds) & (fold < val_folds + test_folds))
    return tuple(dataset.select(np.flatnonzero(part)) for part in parts)


def describe(dataset: datasets.Dataset, source_column: str | None = None) -> dict:
    """Counts per class (and per source), recorded next to a checkpoint so a model card can quote them."""
    targets = np.array(dataset["target"])
    counts = {"n": int(len(targets)), **{name: int((targets == i).sum()) for i, name in enumerate(LABEL_NAMES)}}
    if source_column:
        sources = np.array(dataset[source_column]).astype(str)
        counts["by_source"] = {
            source: {name: int(((sources == source) & (targets == i)).sum()) for i, name in enumerate(LABEL_NAMES)}
            for source in sorted(set(sources))
        }
    return counts


def load_splits(spec: DataSpec, check: bool = True) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, validation): the dataset's own validation split when it has one, else our split;
    without the held-out source, if any."""
    train, val = _full_splits(spec, check)
    if spec.hold_out_source:
        train, val = (without_source(part, spec) for part in (train, val))
    return train, val


def held_out_set(spec: DataSpec) -> datasets.Dataset:
    """The test set of a leave-one-source-out run: every image of the held-out source, plus, when that
    source has one class only (e.g. a generator's fakes), the validation images of the other class."""
    train, val = _full_splits(spec, check=False)
    held = datasets.concatenate_datasets([only_source(part, spec) for part in (train, val)])
    classes = set(held["target"])
    if len(classes) == 1:
        others = without_source(val, spec)
        held = datasets.concatenate_datasets([held, others.filter(lambda target: target not in classes, input_columns="target")])
    return held


def _full_splits(spec: DataSpec, check: bool) -> tuple[datasets.Dataset, datasets.Dataset]:
    raw = load_raw(spec)
    val_name = next((name for name in VALIDATION_SPLITS if name in raw), None)
    train = with_targets(raw["train"], spec)
    if check:
        check_images(train)
    if spec.hold_out_source:
        _check_hold_out(train, spec)
    if val_name:
        val = with_targets(raw[val_name], spec)
        if check:
            check_images(val)
        return train, val
    if spec.test_fraction > 0:
        return split_three(train, spec)[:2]
    return split(train, spec)


def load_test(spec: DataSpec) -> datasets.Dataset:
    """The test split of the three-way split (`--test-fraction`): touched once per adopted model, for the numbers
    the card and the README publish."""
    if spec.test_fraction <= 0:
        raise DataError("a test split needs --test-fraction (the three-way split), e.g. --val-fraction 0.1 --test-fraction 0.1")
    raw = load_raw(spec)
    if any(name in raw for name in VALIDATION_SPLITS) or "test" in raw:
        raise DataError("this dataset has splits of its own: evaluate its own test split with --split all on it")
    test = split_three(with_targets(raw["train"], spec), spec)[2]
    return without_source(test, spec) if spec.hold_out_source else test


def _check_hold_out(dataset: datasets.Dataset, spec: DataSpec) -> None:
    if not spec.source_column:
        raise DataError("--hold-out-source needs --source-column (the column that names each image's source)")
    sources = sorted({str(value) for value in dataset[spec.source_column]})
    if spec.hold_out_source not in sources:
        raise DataError(f"--hold-out-source {spec.hold_out_source!r} is not a source of this dataset: {sources}")


def only_source(dataset: datasets.Dataset, spec: DataSpec) -> datasets.Dataset:
    return dataset.filter(lambda source: str(source) == spec.hold_out_source, input_columns=spec.source_column)


def without_source(dataset: datasets.Dataset, spec: DataSpec) -> datasets.Dataset:
    return dataset.filter(lambda source: str(source) != spec.hold_out_source, input_columns=spec.source_column)


# --- transforms -------------------------------------------------------------------------------


class RandomJPEG:
    """Re-encode as JPEG at a random quality: detectors must not key on one source's compression."""

    def __init__(self, quality=(30, 95), p=0.5):
        self.quality, self.p = quality, p

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() > self.p:
            return image
        return reencode_jpeg(image, random.randint(*self.quality))


class RandomBlurOrDownscale:
    """Gaussian blur or a down-and-up resize: the softness of small or resized photos."""

    def __init__(self, sigma=(0.1, 2.0), scale=(0.3, 0.9), p=0.3):
        self.sigma, self.scale, self.p = sigma, scale, p

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() > self.p:
            return image
        if random.random() < 0.5:
            return image.filter(ImageFilter.GaussianBlur(random.uniform(*self.sigma)))
        factor = random.uniform(*self.scale)
        small = image.resize((max(8, round(image.width * factor)), max(8, round(image.height * factor))), Image.BILINEAR)
        return small.resize(image.size, Image.BILINEAR)


class GaussianNoise:
    def __init__(self, std=(0.0, 0.05), p=0.3):
        self.std, self.p = std, p

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if random.random() > self.p:
            return tensor
        return tensor + torch.randn_like(tensor) * random.uniform(*self.std)


class EqualiseQuality:
    """The same random degradation for every image, real or fake, so that resolution, sharpness and
    compression carry no label: down-scale to a width drawn from one log-uniform distribution (images
    already narrower stay as they are; the training images are face crops, so this is the face's width,
    with a random resampling filter), then mild blur or sharpening, then JPEG at a quality drawn from one
    distribution."""

    FILTERS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS, Image.Resampling.BOX)

    def __init__(self, width=(64, 288), quality=(45, 98), p_jpeg=0.9, p_filter=0.5):
        self.width, self.quality, self.p_jpeg, self.p_filter = width, quality, p_jpeg, p_filter

    def __call__(self, image: Image.Image) -> Image.Image:
        target = math.exp(random.uniform(math.log(self.width[0]), math.log(self.width[1])))
        if image.width > target:
            factor = target / image.width
            image = image.resize((max(8, round(image.width * factor)), max(8, round(image.height * factor))),
                                 random.choice(self.FILTERS))
        if random.random() < self.p_filter:
            if random.random() < 0.5:
                image = image.filter(ImageFilter.GaussianBlur(random.uniform(0.3, 1.2)))
            else:
                image = image.filter(ImageFilter.UnsharpMask(radius=random.uniform(0.8, 2.0),
                                                             percent=random.randint(30, 120), threshold=2))
        if random.random() < self.p_jpeg:
            image = reencode_jpeg(image, random.randint(*self.quality))
        return image


def crop_mirrored(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """`box` of the picture; where it reaches beyond the picture, the picture mirrored (as FFHQ's alignment pads)."""
    left, top, right, bottom = box
    pads = (max(0, -top), max(0, bottom - image.height)), (max(0, -left), max(0, right - image.width))
    if any(any(pair) for pair in pads):
        image = Image.fromarray(np.pad(np.asarray(image), (*pads, (0, 0)), mode="reflect"))
        left, top, right, bottom = left + pads[1][0], top + pads[0][0], right + pads[1][0], bottom + pads[0][0]
    return image.crop((left, top, right, bottom))


FRAMING_ZOOM_IN = (0.55, 1.0)  # RandomFraming's square crops: this fraction of the shorter side
FRAMING_ZOOM_OUT = (1.0, 1.5)  # RandomFraming's mirrored borders: a canvas this many times the longer side


class RandomFraming:
    """With probability `p`, frame the picture anew, the same way for every image, real or fake, so that where
    the face sits and how much of the frame it fills carry no label: half the time a square crop of a random
    fraction (`zoom_in`) of the shorter side at a random place, half the time the picture placed at a random
    place inside a canvas up to `zoom_out` times its size, the border filled by mirroring the picture.

    Why: the GAN faces of the shared data all come aligned exactly as FFHQ aligns its photographs (the face the
    same size, in the same place). A model trained without this calls FFHQ-aligned real photos fake and misses
    the same GAN faces cropped another way (docs/generalisation/framing.md)."""

    def __init__(self, p: float = 0.5, zoom_in=FRAMING_ZOOM_IN, zoom_out=FRAMING_ZOOM_OUT):
        self.p, self.zoom_in, self.zoom_out = p, zoom_in, zoom_out

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.p <= 0 or random.random() >= self.p:
            return image
        if random.random() < 0.5:
            side = max(1, round(min(image.size) * random.uniform(*self.zoom_in)))
            left, top = random.randint(0, image.width - side), random.randint(0, image.height - side)
            return image.crop((left, top, left + side, top + side))
        side = round(max(image.size) * random.uniform(*self.zoom_out))
        left, top = random.randint(0, side - image.width), random.randint(0, side - image.height)
        return crop_mirrored(image, (-left, -top, side - left, side - top))


# Where FFHQ's alignment puts the face, in the terms of the face's square (detector.faces.square_box, fitted to match
# the Haar box these were first measured with): on 40 photos each of `ffhq_sample` and `gan_faces_site`, the box
# is centred across (0.49-0.51 of the width), its centre at 0.53-0.56 of the height, its width 0.62-0.74 of the
# frame's (10th-90th percentiles; medians 0.50, 0.54, 0.69).
ALIGNED_WIDTH = (0.62, 0.76)
ALIGNED_CENTRE_X = (0.48, 0.52)
ALIGNED_CENTRE_Y = (0.52, 0.57)


def aligned_box(face: Face, width: float, centre_x: float, centre_y: float) -> tuple[int, int, int, int]:
    """The square frame in which `face`'s square (`detector.faces.square_box`) is `width` of the frame's width, its
    centre at (`centre_x`, `centre_y`) of the frame. It may reach beyond the picture."""
    left, top, right, bottom = square_box(face)
    side = max(1, round((right - left) / width))
    x0, y0 = round((left + right) / 2 - centre_x * side), round((top + bottom) / 2 - centre_y * side)
    return x0, y0, x0 + side, y0 + side


def train_transform(config: dict, strength: float = 1.0, equalise: bool = False, framing: float = 0.0) -> T.Compose:
    """Flip, ±15° rotation, colour jitter, random resized crop, JPEG, blur/downscale, noise.

    `strength` scales every augmentation's probability and range (0 = crop and flip only). With `equalise`,
    every image first goes through `EqualiseQuality`, which replaces the separate JPEG and blur/downscale steps.
    `framing`: the probability of `RandomFraming`, applied first.
    """
    size = config["input_size"][1]
    jitter = 0.2 * strength
    degrade = [EqualiseQuality()] if equalise else []
    return T.Compose([
        *([RandomFraming(framing)] if framing > 0 else []),
        *degrade,
        T.RandomResizedCrop(size, scale=(1 - 0.5 * strength, 1.0), ratio=(0.85, 1.18)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.RandomRotation(15)], p=0.5 * strength),
        T.RandomApply([T.ColorJitter(jitter, jitter, jitter, 0.05 * strength)], p=0.8 * strength),
        *([] if equalise else [RandomBlurOrDownscale(p=0.3 * strength), RandomJPEG(p=0.5 * strength)]),
        T.ToTensor(),
        T.Normalize(config["mean"], config["std"]),
        GaussianNoise(p=0.3 * strength),
    ])


def open_rgb(item: dict) -> Image.Image:
    """A dataset's image cell → upright RGB, converted exactly as the detector converts uploads."""
    return open_file_rgb(item["bytes"] if item.get("bytes") else item["path"])


REAL, FAKE = LABEL_NAMES.index("real"), LABEL_NAMES.index("fake")


FACE_CROP_MARGIN = (0.2, 0.45)
FACE_CACHE_NAME = "face_cache.json"  # training.train's default face cache, in its output folder  # the face-crop view's default margin range, as a fraction of the face's side


@dataclass(frozen=True)
class FaceCropView:
    """With probability `p`, the picture the app and the CLI analyse by default: the face found by the same
    finder the app uses, cropped as a square from its landmarks with a margin (`detector.faces.crop_box`; the detector uses its model's
    `calibration.face_margin`, here it is drawn from `margin`). A training set of face crops is already that view; portraits with hair, shoulders
    and background (studio, stock and press photos) are not, and a model that never saw their face crops
    calls them fake. Pictures without a face found stay as they are.

    With probability `aligned` instead, the aligned view: the picture framed around the face found as FFHQ aligns
    its photographs (`ALIGNED_WIDTH`, `ALIGNED_CENTRE_X`, `ALIGNED_CENTRE_Y`), mirrored where the frame reaches
    beyond it. The shared data's GAN faces all come in that framing and its real photos almost never do (101 FFHQ
    photographs), so a model learns "framed as FFHQ → fake" and calls FFHQ- and CelebA-HQ-aligned real photos
    fake. Every image, real or fake, may take this view."""

    p: float = 0.5
    margin: tuple[float, float] = FACE_CROP_MARGIN
    finder: FaceFinder = DEFAULT_FINDER
    aligned: float = 0.0

    def __call__(self, image: Image.Image, faces: list[Face] | None = None) -> Image.Image:
        """`faces`: the faces found in `image` (a `FaceCache`'s); found here when not given."""
        draw = random.random()
        if draw >= self.aligned + self.p:
            return image
        faces = self.finder(image) if faces is None else faces
        if not faces:
            return image
        if draw < self.aligned:
            box = aligned_box(faces[0], random.uniform(*ALIGNED_WIDTH), random.uniform(*ALIGNED_CENTRE_X),
                              random.uniform(*ALIGNED_CENTRE_Y))
            return crop_mirrored(image, box)
        return image.crop(face_crop_box(faces[0], image.size, random.uniform(*self.margin)))


class FaceCache:
    """The faces found in each training picture, found once (`detector.faces`' finder, as served) and kept in a JSON
    file keyed by the picture's path (or, for pictures held as bytes, a hash of them): the face-crop and aligned views
    read them there instead of searching every picture again at every epoch."""

    VERSION = 1  # of the file's layout and of the finder's settings it was filled with

    def __init__(self, path: Path | None = None, finder: FaceFinder = DEFAULT_FINDER):
        self.path, self.finder = (Path(path) if path else None), finder
        self.faces: dict[str, list[Face]] = {}
        if self.path is not None and self.path.is_file():
            stored = json.loads(self.path.read_text())
            if stored.get("version") == self.VERSION and stored.get("finder") == repr(finder):
                self.faces = {key: [Face.from_dict(face) for face in found] for key, found in stored["faces"].items()}
            else:
                logger.info("face cache %s was filled by another finder or layout: it is filled again", self.path)

    @staticmethod
    def key(item: dict) -> str:
        """An image cell ({'path', 'bytes'}) → its key: the path, else a hash of the bytes."""
        if item.get("path") and not item.get("bytes"):
            return str(Path(item["path"]).resolve())
        return "sha256:" + hashlib.sha256(item["bytes"]).hexdigest()

    def get(self, item: dict) -> list[Face] | None:
        return self.faces.get(self.key(item))

    def fill(self, dataset: datasets.Dataset) -> "FaceCache":
        """Find the faces of every picture of `dataset` not yet in the cache; save the file when anything was added."""
        images = dataset.cast_column("image", datasets.Image(decode=False))["image"]
        missing = [item for item in images if self.key(item) not in self.faces]
        logger.info("face cache: %d of %d pictures already searched, %d to search%s", len(images) - len(missing),
                    len(images), len(missing), f" ({self.path})" if self.path else "")
        for done, item in enumerate(missing, 1):
            self.faces[self.key(item)] = self.finder(open_rgb(item))
            if done % 2000 == 0:
                logger.info("face cache: %d of %d searched", done, len(missing))
        if missing and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.path, json.dumps({"version": self.VERSION, "finder": repr(self.finder), "faces": {
                key: [face.to_dict() for face in found] for key, found in self.faces.items()}}))
        return self


@dataclass(frozen=True)
class PseudoFakes:
    """Turn a fraction `rate` of the real photos drawn into self-blended fakes (training/self_blend.py)."""

    rate: float
    blend: SelfBlend = SelfBlend()

    def __call__(self, image: Image.Image, target: int) -> tuple[Image.Image, int]:
        if target == REAL and self.rate > 0 and random.random() < self.rate:
            return self.blend(image)[0], FAKE
        return image, target


def attach_transform(dataset: datasets.Dataset, transform, pseudo_fakes: PseudoFakes | None = None,
                     face_view: FaceCropView | None = None, face_cache: FaceCache | None = None) -> datasets.Dataset:
    """Decode lazily; for training, take the face-crop view and make pseudo-fakes; apply `transform`
    → {'pixel_values', 'target'} per example."""

    def apply(batch):
        pixels, targets = [], []
        for item, target in zip(batch["image"], batch["target"]):
            image = open_rgb(item)
            if face_view is not None:
                image = face_view(image, face_cache.get(item) if face_cache is not None else None)
            if pseudo_fakes is not None:
                image, target = pseudo_fakes(image, target)
            pixels.append(transform(image))
            targets.append(target)
        return {"pixel_values": pixels, "target": targets}

    return dataset.with_transform(apply)


def balanced_weights(dataset: datasets.Dataset, source_column: str | None, pseudo_fake_rate: float = 0.0,
                     exponent: float = 0.5) -> np.ndarray:
    """Per-row sampling weights so that neither a source nor the class balance predicts the label.

    Within each class, a source's share of the draws grows as (its size) ** `exponent` (0: every source
    equally often, 1: as often as it has images; 0.5 keeps a 80-photo source from being repeated hundreds
    of times an epoch). Between classes, real photos get the share that leaves labels 50/50 once
    `pseudo_fake_rate` of them have become pseudo-fakes: real = 0.5 / (1 - rate). Weights sum to 1."""
    targets = np.array(dataset["target"])
    sources = np.array(dataset[source_column]).astype(str) if source_column else np.zeros(len(targets)).astype(str)
    real_share = min(1.0, 0.5 / (1.0 - pseudo_fake_rate)) if pseudo_fake_rate < 1 else 1.0
    shares = {REAL: real_share, FAKE: 1.0 - real_share}
    weights = np.zeros(len(targets), dtype=np.float64)
    for label, share in shares.items():
        in_class = targets == label
        names, counts = np.unique(sources[in_class], return_counts=True)
        if not len(names):
            continue
        mass = counts.astype(np.float64) ** exponent
        mass = share * mass / mass.sum()
        for name, count, source_mass in zip(names, counts, mass):
            weights[in_class & (sources == name)] = source_mass / count
    return weights / weights.sum()


def eval_transform(config: dict) -> Preprocessor:
    """Validation: exactly what the detector does at inference."""
    return Preprocessor(config)


def collate(examples: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "target": torch.tensor([example["target"] for example in examples]),
    }
