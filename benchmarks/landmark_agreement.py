"""How far the face finder's five landmarks lie from a second estimate: MediaPipe's Face Mesh (training/face_mesh.py).

    python -m benchmarks.landmark_agreement                   # 20 upright photos of every source of ../shared/data
    python -m benchmarks.landmark_agreement --per-source 50

For each photo, the first face YuNet finds; Face Mesh reads 468 landmarks in that face's box. Compared, in units of
Face Mesh's eye distance: YuNet's eye centres against the mean of each eye's contour (16 points), the nose tip
against point 1, the mouth corners against points 78 and 308. Results also go to
benchmarks/results/landmark_agreement.json (or --output).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.face_recall import DATA, ROOT, load_rows
from detector.faces import LANDMARKS, find_faces

logger = logging.getLogger("benchmarks.landmark_agreement")


def mesh_points(points: np.ndarray) -> np.ndarray:
    """Face Mesh's 468 points → the five YuNet names, in `LANDMARKS` order (left and right as the picture shows)."""
    from training.face_mesh import LEFT_EYE, NOSE_TIP, RIGHT_EYE

    return np.stack([points[list(RIGHT_EYE), :2].mean(axis=0), points[list(LEFT_EYE), :2].mean(axis=0),
                     points[NOSE_TIP, :2], points[78, :2], points[308, :2]])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--per-source", type=int, default=20)
    parser.add_argument("--face-mesh", type=Path, help="the Face Mesh TFLite file (default: ../shared/pretrained/...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "landmark_agreement.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from training.face_mesh import DEFAULT_PATH, FaceMesh, face_landmarks

    mesh = FaceMesh.from_tflite(args.face_mesh or DEFAULT_PATH).eval()
    distances, skipped = [], 0
    for row in load_rows(args.data, args.per_source, args.seed):
        image = Image.open(args.data / row["file"]).convert("RGB")
        faces = find_faces(image)
        found = face_landmarks(mesh, image, faces[0].box) if faces else None
        if found is None:
            skipped += 1
            continue
        second = mesh_points(found.points)
        eye_distance = float(np.linalg.norm(second[1] - second[0]))
        distances.append(np.linalg.norm(np.asarray(faces[0].landmarks) - second, axis=1) / eye_distance)
    distances = np.array(distances)
    result = {"photos": len(distances), "skipped": skipped, "points": {}}
    for index, name in enumerate(LANDMARKS):
        d = distances[:, index]
        result["points"][name] = {"median": float(np.median(d)), "p90": float(np.percentile(d, 90)),
                                  "within_0.1": float(np.mean(d <= 0.1))}
    result["all_five_within_0.1"] = float(np.mean((distances <= 0.1).all(axis=1)))
    result["median_of_mean"] = float(np.median(distances.mean(axis=1)))
    logger.info("%d photos (%d without a face or landmarks)", len(distances), skipped)
    for name, stats in result["points"].items():
        logger.info("%-12s median %.3f  90th pct %.3f  within 0.1: %.1f%%", name, stats["median"], stats["p90"],
                    100 * stats["within_0.1"])
    logger.info("all five within 0.1 of the eye distance: %.1f%%; median of the mean distance %.3f",
                100 * result["all_five_within_0.1"], result["median_of_mean"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
