"""Face recall of detector/faces.py on the project's real face images, and on composed multi-face pictures.

    python -m benchmarks.face_recall                        # every image of ../shared/data (13k, minutes)
    python -m benchmarks.face_recall --per-source 50        # a quick look: 50 images per source
    python -m benchmarks.face_recall --min-neighbors 5 --pad 0   # try other settings of FaceFinder

Every image in ../shared/data is a face crop holding one face, so recall = images where at least one
face was found / all images; "centred" = images where a box covers the picture's middle, where a crop's
own face is (a face behind it or a false alarm judged alone is not); "extra" counts images where more
than one box was returned (at least one of them is a false alarm). The multi-face pictures paste 4 of
those faces (random sizes, random places, no overlap) on a plain canvas; a pasted face counts as found
when a box's centre lies inside it, and a box inside no pasted face is a false alarm. Times are per image, one OpenCV thread.
Results also go to benchmarks/results/face_recall.json. Wall time counts waiting for a core on a busy
machine; CPU time does not.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import time
from dataclasses import asdict, fields
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from detector.faces import Box, FaceFinder

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


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


def holds_centre(box: Box, size: tuple[int, int]) -> bool:
    """Whether `box` covers the middle of the picture, where a face crop's own face is."""
    return inside((size[0] / 2, size[1] / 2), box)


def single_face_recall(finder: FaceFinder, data: Path, rows: list[dict]) -> dict:
    per_source: dict[str, dict] = {}
    times, cpu = [], 0.0
    for row in rows:
        image = Image.open(data / row["file"]).convert("RGB")
        start, start_cpu = time.perf_counter(), time.process_time()
        boxes = finder(image)
        times.append(time.perf_counter() - start)
        cpu += time.process_time() - start_cpu
        stats = per_source.setdefault(row["source"], {"images": 0, "found": 0, "centred": 0, "extra": 0, "missed": [],
                                                      "off_centre": []})
        stats["images"] += 1
        stats["found"] += bool(boxes)
        stats["extra"] += len(boxes) > 1
        if not boxes:
            stats["missed"].append(row["file"])
        elif any(holds_centre(box, image.size) for box in boxes):
            stats["centred"] += 1
        else:  # boxes, but none on the crop's own face: a face behind it, or a false alarm, would be judged alone
            stats["off_centre"].append(row["file"])
    total = {key: sum(s[key] for s in per_source.values()) for key in ("images", "found", "centred", "extra")}
    return {"per_source": per_source, "total": total, "recall": total["found"] / total["images"],
            "centred_rate": total["centred"] / total["images"],
            "extra_rate": total["extra"] / total["images"], "ms_per_image": statistics.mean(times) * 1000,
            "cpu_ms_per_image": cpu / len(rows) * 1000,
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


def multi_face_recall(finder: FaceFinder, data: Path, rows: list[dict], canvases: int, seed: int) -> dict:
    rng = random.Random(seed)
    pasted = found = false_alarms = 0
    times = []
    for _ in range(canvases):
        faces = [Image.open(data / row["file"]).convert("RGB") for row in rng.sample(rows, 4)]
        canvas, truth = compose(faces, rng)
        start = time.perf_counter()
        boxes = finder(canvas)
        times.append(time.perf_counter() - start)
        hit, wrong = match(boxes, truth)
        pasted, found, false_alarms = pasted + len(truth), found + hit, false_alarms + wrong
    return {"canvases": canvases, "faces_pasted": pasted, "faces_found": found, "recall": found / max(1, pasted),
            "false_alarms": false_alarms, "ms_per_canvas": statistics.mean(times) * 1000}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="a folder with manifest.csv (default: ../shared/data)")
    parser.add_argument("--per-source", type=int, help="a random sample of N images per source (default: all)")
    parser.add_argument("--canvases", type=int, default=100, help="composed 4-face pictures (default: 100)")
    parser.add_argument("--seed", type=int, default=0)
    for field in fields(FaceFinder):
        flag = f"--{field.name.replace('_', '-')}"
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            parser.add_argument(flag, type=type(field.default), default=field.default)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    finder = FaceFinder(**{field.name: getattr(args, field.name) for field in fields(FaceFinder)})
    rows = load_rows(args.data, args.per_source, args.seed)
    single = single_face_recall(finder, args.data, rows)
    multi = multi_face_recall(finder, args.data, rows, args.canvases, args.seed)
    print(f"settings: {asdict(finder)}")
    print(f"{'source':<20} {'images':>7} {'found':>7} {'recall':>7} {'centred':>8} {'extra':>6}")
    for source, s in sorted(single["per_source"].items()):
        print(f"{source:<20} {s['images']:>7} {s['found']:>7} {s['found'] / s['images']:>7.3f} "
              f"{s['centred'] / s['images']:>8.3f} {s['extra']:>6}")
    t = single["total"]
    print(f"{'all':<20} {t['images']:>7} {t['found']:>7} {single['recall']:>7.3f} {single['centred_rate']:>8.3f} "
          f"{t['extra']:>6}")
    print(f"time per image: mean {single['ms_per_image']:.1f} ms, median {single['ms_per_image_median']:.1f} ms wall; "
          f"{single['cpu_ms_per_image']:.1f} ms CPU")
    print(f"multi-face pictures: {multi['faces_found']}/{multi['faces_pasted']} faces found "
          f"(recall {multi['recall']:.3f}), {multi['false_alarms']} false alarms in {multi['canvases']} pictures, "
          f"{multi['ms_per_canvas']:.1f} ms per 1280x800 picture")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    results = {"settings": asdict(finder), "single": single, "multi": multi}
    (out / "face_recall.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
