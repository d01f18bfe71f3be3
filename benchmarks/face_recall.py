"""Face recall of detector/faces.py on the project's face photos: as they are, turned, half covered, and composed.

    python -m benchmarks.face_recall                          # every photo of ../shared/data as it is (14k, minutes)
    python -m benchmarks.face_recall --per-source 50          # a quick look: 50 photos per source
    python -m benchmarks.face_recall --finder old_faces.py    # another finder: a file whose find_faces(image) returns
                                                              # faces (or boxes); e.g. the Haar cascades of an earlier
                                                              # commit: git show ff30132:detector/faces.py > old_faces.py

Every photo in ../shared/data is a face photo holding one face, so recall = photos where at least one face was found /
all photos; "centred" = photos where a box covers the picture's middle, where the photo's own face is. The conditions
(`--conditions-per-source` photos of each source, the same photos for every condition): the photo turned by 30°, 60°
and 90° (the picture grown to hold it, black corners), and covered by a flat grey from 55% of its height down (mouth
and chin: a mask, a hand) or over its left half. A multi-face picture pastes 4 of those photos (random sizes, random
places, no overlap) on a plain canvas; a pasted face counts as found when a box's centre lies inside it, and a box
inside no pasted face is a false alarm. Times are per photo, wall clock on one process.
Results also go to benchmarks/results/face_recall.json (or --output).
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from detector.faces import Box, find_faces

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
logger = logging.getLogger("benchmarks.face_recall")

Finder = Callable[[Image.Image], list]


def turned(angle: float) -> Callable[[Image.Image], Image.Image]:
    return lambda image: image.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


def covered(part: str) -> Callable[[Image.Image], Image.Image]:
    def cover(image: Image.Image) -> Image.Image:
        image = image.copy()
        width, height = image.size
        region = (0, round(height * 0.55), width, height) if part == "lower" else (0, 0, round(width * 0.5), height)
        ImageDraw.Draw(image).rectangle(region, fill=(128, 128, 128))
        return image
    return cover


CONDITIONS = {"turned 30°": turned(30), "turned 60°": turned(60), "turned 90°": turned(90),
              "lower part covered": covered("lower"), "left half covered": covered("left")}


def boxes_of(found: list) -> list[Box]:
    return [tuple(getattr(face, "box", face)) for face in found]


def load_rows(data: Path, per_source: int | None, seed: int) -> list[dict]:
    rows = list(csv.DictReader((data / "manifest.csv").open()))
    if per_source:
        rng, by_source = random.Random(seed), {}
        for row in rows:
            by_source.setdefault(row["source"], []).append(row)
        rows = [row for source in sorted(by_source) for row in rng.sample(by_source[source], min(per_source, len(by_source[source])))]
    return rows


def inside(point: tuple[float, float], box: Box) -> bool:
    return box[0] <= point[0] < box[2] and box[1] <= point[1] < box[3]


def recall(finder: Finder, data: Path, rows: list[dict], condition: Callable[[Image.Image], Image.Image] | None = None) -> dict:
    per_source: dict[str, dict] = {}
    times = []
    for row in rows:
        image = Image.open(data / row["file"]).convert("RGB")
        if condition is not None:
            image = condition(image)
        start = time.perf_counter()
        boxes = boxes_of(finder(image))
        times.append(time.perf_counter() - start)
        stats = per_source.setdefault(row["source"], {"images": 0, "found": 0, "centred": 0, "missed": []})
        stats["images"] += 1
        stats["found"] += bool(boxes)
        stats["centred"] += any(inside((image.width / 2, image.height / 2), box) for box in boxes)
        if not boxes:
            stats["missed"].append(row["file"])
    total = {key: sum(s[key] for s in per_source.values()) for key in ("images", "found", "centred")}
    return {"per_source": per_source, "total": total, "recall": total["found"] / total["images"],
            "centred_rate": total["centred"] / total["images"], "ms_per_image": statistics.mean(times) * 1000,
            "ms_per_image_median": statistics.median(times) * 1000}


def compose(faces: list[Image.Image], rng: random.Random, size=(1280, 800)) -> tuple[Image.Image, list[Box]]:
    """Paste the faces at random sizes (160–320 px) and places, never overlapping, on a soft gradient."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = np.array([rng.randint(90, 200) for _ in range(3)], dtype=float)
    gradient = base + 40 * np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1)
    canvas = Image.fromarray(np.clip(gradient, 0, 255).astype(np.uint8))
    placed: list[Box] = []
    for face in faces:
        for _ in range(200):
            side = rng.randint(160, 320)
            scaled = face.resize((side, round(side * face.height / face.width)), Image.Resampling.BICUBIC)
            left, top = rng.randint(0, width - scaled.width), rng.randint(0, height - scaled.height)
            box = (left, top, left + scaled.width, top + scaled.height)
            if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
                canvas.paste(scaled, box[:2])
                placed.append(box)
                break
    return canvas, placed


def match(boxes: list[Box], truth: list[Box]) -> tuple[int, int]:
    """(pasted faces with a box centred inside them, boxes centred inside no pasted face)."""
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes]
    found = sum(any(inside(c, t) for c in centres) for t in truth)
    false_alarms = sum(not any(inside(c, t) for t in truth) for c in centres)
    return found, false_alarms


def multi_face_recall(finder: Finder, data: Path, rows: list[dict], canvases: int, seed: int) -> dict:
    rng = random.Random(seed)
    pasted = found = false_alarms = 0
    times = []
    for _ in range(canvases):
        faces = [Image.open(data / row["file"]).convert("RGB") for row in rng.sample(rows, 4)]
        canvas, truth = compose(faces, rng)
        start = time.perf_counter()
        boxes = boxes_of(finder(canvas))
        times.append(time.perf_counter() - start)
        hit, wrong = match(boxes, truth)
        pasted, found, false_alarms = pasted + len(truth), found + hit, false_alarms + wrong
    return {"canvases": canvases, "faces_pasted": pasted, "faces_found": found, "recall": found / max(1, pasted),
            "false_alarms": false_alarms, "ms_per_canvas": statistics.mean(times) * 1000}


def load_finder(path: Path | None) -> tuple[Finder, str]:
    if path is None:
        return find_faces, "detector.faces (YuNet)"
    spec = importlib.util.spec_from_file_location("other_faces", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.find_faces, str(path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="a folder with manifest.csv (default: ../shared/data)")
    parser.add_argument("--per-source", type=int, help="photos as they are: a random sample of N per source (default: all)")
    parser.add_argument("--conditions-per-source", type=int, default=100,
                        help="photos of each source turned and covered (default: %(default)s; 0: none)")
    parser.add_argument("--canvases", type=int, default=100, help="composed 4-face pictures (default: 100)")
    parser.add_argument("--finder", type=Path, help="a Python file whose find_faces(image) is measured instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "face_recall.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    finder, name = load_finder(args.finder)
    rows = load_rows(args.data, args.per_source, args.seed)
    results = {"finder": name, "as_they_are": recall(finder, args.data, rows)}
    sample = load_rows(args.data, args.conditions_per_source, args.seed) if args.conditions_per_source else []
    for condition, change in CONDITIONS.items() if sample else ():
        results[condition] = recall(finder, args.data, sample, change)
    results["multi_face"] = multi_face_recall(finder, args.data, rows, args.canvases, args.seed)
    logger.info("finder: %s", name)
    logger.info("%-20s %7s %7s %7s %8s", "source", "images", "found", "recall", "centred")
    for source, s in sorted(results["as_they_are"]["per_source"].items()):
        logger.info("%-20s %7d %7d %7.3f %8.3f", source, s["images"], s["found"], s["found"] / s["images"],
                    s["centred"] / s["images"])
    for condition in ("as_they_are", *CONDITIONS):
        if condition in results:
            r = results[condition]
            logger.info("%-20s %7d %7d %7.3f %8.3f  %.1f ms a photo (median %.1f)", condition, r["total"]["images"],
                        r["total"]["found"], r["recall"], r["centred_rate"], r["ms_per_image"], r["ms_per_image_median"])
    multi = results["multi_face"]
    logger.info("multi-face pictures: %d/%d faces found (recall %.3f), %d false alarms in %d pictures, %.1f ms a 1280x800 "
                "picture", multi["faces_found"], multi["faces_pasted"], multi["recall"], multi["false_alarms"],
                multi["canvases"], multi["ms_per_canvas"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
