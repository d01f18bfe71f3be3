"""Which Grad-CAM is faithful, and at what cost: the last stage (stride 32) against the stage before (stride 16).

    python -m benchmarks.cam_faithfulness --data ../shared/data/manifest.csv --images 200
    python -m benchmarks.cam_faithfulness --data path/faces.csv --image-column file --model owner/name

A deletion test (Petsiuk et al., "RISE", 2018; Samek et al., 2017): for each image, the pixels the map ranks highest
(the top `--fractions`) are replaced by a strongly blurred copy of the image, and the explained class's
probability is measured again. A faithful map points at what the model used, so blurring its top pixels lowers that
probability more than blurring as many pixels chosen by a random smooth map (the baseline, same sizes). Reported per
stage and fraction: the mean drop in probability, and the drop over the random baseline's. Also timed: one
analysis (forward + CAM) per stage, median of `--repeats` batches of one 128-px image.

The images are whole pictures from a CSV with a `file` column (paths relative to the CSV), taken in order after a
seeded shuffle, so two runs with the same arguments score the same images.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from benchmarks import print_results
from detector import Detector
from detector.explain import CAM_STAGES, predict_with_cam
from detector.images import load_image

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder or Hub id (default: $DETECTOR_MODEL or the bundled model)")
    parser.add_argument("--data", required=True, help="CSV with an image column (paths relative to the CSV)")
    parser.add_argument("--image-column", default="file")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "cam_faithfulness.json"))
    return parser.parse_args(argv)


def pick_images(csv_path: Path, column: str, count: int, seed: int) -> list[Path]:
    import csv

    with open(csv_path, newline="") as f:
        files = [csv_path.parent / row[column] for row in csv.DictReader(f)]
    random.Random(seed).shuffle(files)
    return files[:count]


def upsampled(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, h, w] → [N, H, W], bilinear, as the page renders the map."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def delete_top(pixels: torch.Tensor, blurred: torch.Tensor, ranking: torch.Tensor, fraction: float) -> torch.Tensor:
    """Replace the `fraction` of pixels `ranking` puts highest by the blurred image's."""
    flat = ranking.flatten(1)
    k = max(1, round(fraction * flat.shape[1]))
    cut = flat.topk(k, dim=1).values[:, -1:]
    mask = (flat >= cut).view_as(ranking)[:, None]
    return torch.where(mask, blurred, pixels)


def class_probability(model: torch.nn.Module, pixels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        features = model.forward_features(pixels.to(next(model.parameters()).dtype))
        logits = model.forward_head(features.float())  # the detector keeps the head in fp32
    return logits.softmax(dim=1).gather(1, classes[:, None])[:, 0]


def deletion(detector: Detector, files: list[Path], fractions: list[float], seed: int, batch: int = 16) -> dict:
    generator = torch.Generator().manual_seed(seed)
    drops = {(stage, fraction, kind): [] for stage in CAM_STAGES for fraction in fractions for kind in ("cam", "random")}
    model = detector.model
    for start in range(0, len(files), batch):
        images = [load_image(path) for path in files[start:start + batch]]
        pixels = torch.stack([detector.preprocess(image) for image in images])
        blurred = gaussian_blur(pixels, kernel_size=31, sigma=8.0)
        size = tuple(pixels.shape[-2:])
        for stage in CAM_STAGES:
            probabilities, cams, explained = predict_with_cam(model, pixels, stage=stage)
            before = class_probability(model, pixels, explained)
            ranking = upsampled(cams, size)
            noise = upsampled(torch.rand(cams.shape, generator=generator), size)  # a random map of the same grid
            for fraction in fractions:
                for kind, order in (("cam", ranking), ("random", noise)):
                    after = class_probability(model, delete_top(pixels, blurred, order, fraction), explained)
                    drops[(stage, fraction, kind)].extend((before - after).tolist())
    results = {}
    for stage in CAM_STAGES:
        for fraction in fractions:
            cam = float(np.mean(drops[(stage, fraction, "cam")]))
            base = float(np.mean(drops[(stage, fraction, "random")]))
            key = f"stage{stage}_top{round(fraction * 100)}pct"
            results[f"{key}_drop"] = cam
            results[f"{key}_random_drop"] = base
            results[f"{key}_drop_over_random"] = cam - base
    return results


def timing(detector: Detector, image, repeats: int) -> dict:
    pixels = detector.preprocess(image)[None]
    results = {}
    for stage in CAM_STAGES:
        for _ in range(3):
            predict_with_cam(detector.model, pixels, stage=stage)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            predict_with_cam(detector.model, pixels, stage=stage)
            times.append((time.perf_counter() - start) * 1000)
        results[f"stage{stage}_analysis_ms"] = statistics.median(times)
    results["finer_over_coarse_time"] = results["stage-2_analysis_ms"] / results["stage-1_analysis_ms"]
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    detector = Detector.from_pretrained(args.model)
    files = pick_images(Path(args.data), args.image_column, args.images, args.seed)
    grid = {stage: tuple(predict_with_cam(detector.model, detector.preprocess(load_image(files[0]))[None], stage=stage)[1]
                         .shape[-2:]) for stage in CAM_STAGES}
    results = {"model": detector.name, "device": str(detector.device), "dtype": str(detector.dtype), "images": len(files),
               "input_px": detector.preprocess.size[0], **{f"stage{s}_grid": "×".join(map(str, g)) for s, g in grid.items()}}
    results.update(deletion(detector, files, args.fractions, args.seed))
    results.update(timing(detector, load_image(files[0]), args.repeats))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_results(results)
    return results


if __name__ == "__main__":
    main()
