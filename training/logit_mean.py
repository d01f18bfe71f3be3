"""Two models as one, measured from their reports: the mean of their logits, calibrated by the same rule.

    python -m training.logit_mean runs/a/eval runs/b/eval --output-dir runs/a+b/eval --fpr-per-source

Each REPORT is a folder `training.evaluate --calibrate` wrote for one model on the same images (same split, same face
search): its predictions.csv holds the raw p(fake) it fitted on. The pair's raw score is sigmoid of the mean of the
two logits, log(p / (1 − p)); it is calibrated and thresholded exactly as `training.evaluate --calibrate` would
(the same options), and written as a report of the same shape (metrics.json, predictions.csv, plots), so that
`training.compare`, `training.bootstrap` and the adoption rule read it as they read any model's. Also counted: the
fakes each model misses at its own stored threshold and those both miss, which says whether their errors differ.
What this measures is what serving the two networks together would score; serving them is a separate matter.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from detector.errors import run_cli
from detector.logs import configure_logging

from .bootstrap import read_predictions
from .evaluate import at_fitted_threshold, calibrate, source_metrics, write_report
from .metrics import binary_metrics

logger = logging.getLogger(__name__)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def read_report(folder: Path) -> tuple[dict, dict]:
    """(metrics.json, file → (is_fake, raw p_fake, source, group)) of a `training.evaluate --calibrate` folder."""
    try:
        report = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"cannot read {folder / 'metrics.json'}: {err}: give folders training.evaluate wrote") from err
    if not report.get("calibration"):
        raise SystemExit(f"{folder} holds no calibration: evaluate each model with --calibrate (its raw scores)")
    return report, read_predictions(folder / "predictions.csv")


def missed_at_threshold(folder: Path, report: dict) -> set[str]:
    """The fakes a model leaves below its fitted threshold (its calibrated scores, as predictions.csv holds them)."""
    import csv

    with (folder / "predictions.csv").open(newline="") as f:
        return {row["file"] for row in csv.DictReader(f)
                if row["is_fake"] == "1" and float(row["p_fake_calibrated"]) < report["calibration"]["threshold"]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs=2, type=Path, help="two folders of training.evaluate --calibrate")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--target-fpr", type=float, default=0.05)
    parser.add_argument("--fpr-per-source", action="store_true")
    parser.add_argument("--min-source-reals", type=int, default=50)
    parser.add_argument("--pooled-fpr-cap", type=float, default=0.05)
    parser.add_argument("--target-fake-miss", type=float, default=0.05)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    configure_logging()
    (first, a), (second, b) = (read_report(folder) for folder in args.reports)
    if set(a) != set(b) or any(a[f][0] != b[f][0] or a[f][2] != b[f][2] for f in a):
        raise SystemExit("the two reports score different images or give them different labels: evaluate both models "
                         "on the same split")
    if first.get("face_margin") != second.get("face_margin") or first.get("faces") != second.get("faces"):
        raise SystemExit("the two reports were scored differently (face search or its margin): score both the same way")
    files = list(a)
    is_fake = np.array([a[f][0] for f in files], dtype=bool)
    p_fake = 1 / (1 + np.exp(-(logit(np.array([a[f][1] for f in files])) + logit(np.array([b[f][1] for f in files]))) / 2))
    sources = [a[f][2] for f in files]
    result = {"metrics": binary_metrics(is_fake, p_fake), "faces": first.get("faces", False), "files": files,
              "is_fake": is_fake.tolist(), "p_fake": p_fake.tolist(), "sources": sources,
              "groups": [a[f][3] for f in files],
              "per_source": {name: source_metrics(is_fake[np.array(sources) == name], p_fake[np.array(sources) == name], 0.5)
                             for name in sorted(set(sources))}}
    result["calibration"] = calibrate(result, args.target_fpr, first.get("face_margin"), per_source=args.fpr_per_source,
                                      target_fake_miss=args.target_fake_miss, min_source_reals=args.min_source_reals,
                                      pooled_cap=args.pooled_fpr_cap)
    result["calibration"]["scores"] = "raw"
    at_fitted_threshold(result)
    missed = [missed_at_threshold(folder, report) for folder, report in zip(args.reports, (first, second))]
    context = {"model": f"logit mean of {first.get('model')} and {second.get('model')}", "reports": [str(r) for r in args.reports],
               "dataset": first.get("dataset"), "split": first.get("split"), "data": first.get("data"),
               "storage_dtype": first.get("storage_dtype"), "face_margin": first.get("face_margin"),
               "fakes": int(is_fake.sum()), "fakes_missed": {"first": len(missed[0]), "second": len(missed[1]),
                                                             "both": len(missed[0] & missed[1])}}
    report = write_report(result, args.output_dir, {k: v for k, v in context.items() if v is not None})
    c = result["calibration"]
    logger.info("logit mean: ROC-AUC %.3f; threshold %.3f: %.1f%% of fakes caught at %.1f%% of all reals; ECE %.3f; "
                "fakes missed at their own thresholds: %d, %d, both %d of %d", report["metrics"]["roc_auc"], c["threshold"],
                100 * c["fakes_caught"], 100 * report["at_threshold"]["fpr"], c["ece_after"],
                *context["fakes_missed"].values(), context["fakes"])
    return report


if __name__ == "__main__":
    run_cli(main)
