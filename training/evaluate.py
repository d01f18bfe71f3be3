"""Measure a detector on a labelled dataset: the numbers a model card may quote, and their plots.

    # the hold-out split the training run validated on (same data arguments, seed and fraction)
    python -m training.evaluate --model runs/faces/best --dataset ../shared/data/manifest.csv \
        --image-column file --group-column group --source-column source --output-dir runs/faces/eval
    # every row of another dataset, with a Hub model
    python -m training.evaluate --model hf-hub:owner/name --dataset path/to/faces --split all --output-dir eval/faces

It goes through `Detector.analyze_batch`, the path the app and the CLI serve, so what is measured is
what users get. Outputs in --output-dir: metrics.json (overall + per source), predictions.csv (with each image's
source and group when --source-column and --group-column name them; training.bootstrap draws by the group),
roc.png, confusion_matrix.png; with --calibrate, the fitted calibration (detector/calibration.py) and threshold and
reliability.png (with --fpr-per-source, the threshold holds the mean over the sources of real images, each
counting equally, to --target-fpr); with --robustness, ROC-AUC per perturbation (on the same path, whole
images or face search) and robustness.png, and the share of reals and of fakes flagged under each at the
threshold fitted in the run (else the model's stored one).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from dataclasses import asdict
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from detector import Detector
from detector.calibration import RAW_SCORES, Calibration
from detector.errors import run_cli
from detector.logs import configure_logging
from detector.metrics import show
from detector.model import LABEL_NAMES, PRECISIONS, STORAGE_DTYPES, load_model, stored_dtype

from .data import (DataError, DataSpec, add_data_arguments, held_out_set, load_raw, load_splits, open_rgb, spec_from_args,
                   load_test, with_targets)
from .metrics import (binary_metrics, expected_calibration_error, fit_calibration, plot_confusion,
                      fpr_per_source, plot_reliability, plot_robustness, plot_roc, threshold_for_fpr, threshold_for_miss)
from .robustness import PERTURBATIONS

FAKE = LABEL_NAMES.index("fake")
logger = logging.getLogger(__name__)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder (e.g. runs/x/best) or Hub id (hf-hub:owner/name)")
    parser.add_argument("--output-dir", required=True)
    data = add_data_arguments(parser, "data (use the training run's values to get its validation split back)")
    data.add_argument("--seed", type=int, default=42)
    data.add_argument("--split", choices=["validation", "test", "all", "held-out"], default="validation",
                      help="validation: the training hold-out split; test: the three-way split's test split (with "
                           "--test-fraction; once per adopted model); all: every row of every split; held-out: the "
                           "--hold-out-source's images (with the other class's validation images if it has one class)")
    extra = parser.add_argument_group("calibration and robustness")
    extra.add_argument("--calibrate", action="store_true",
                       help="fit the calibration (beta calibration of the two class log-probabilities; temperature and bias "
                            "when its weights are equal) and a decision threshold on these images (use the validation split)")
    extra.add_argument("--target-fpr", type=float, default=0.05, help="the threshold calls this fraction of real images fake")
    extra.add_argument("--target-fake-miss", type=float, default=0.05,
                       help="the lower threshold (below it the verdict is 'likely real') lets at most this fraction of "
                            "the fake images fall under it")
    extra.add_argument("--fpr-per-source", action="store_true",
                       help="--target-fpr is the mean over the sources of real images, each counting equally, so that many "
                            "easy reals cannot hide a rare hard kind (needs --source-column); stored with the threshold")
    extra.add_argument("--min-source-reals", type=int, default=50,
                       help="with --fpr-per-source: only kinds of real photo with at least this many images in the set "
                            "count in the mean (a kind of 20 photos moves by 5 points a photo); default: %(default)s")
    extra.add_argument("--pooled-fpr-cap", type=float, default=0.05,
                       help="with --fpr-per-source: at most this share of all real images together is flagged too "
                            "(default: %(default)s)")
    extra.add_argument("--robustness", nargs="*", choices=list(PERTURBATIONS), metavar="PERTURBATION",
                       help="ROC-AUC under JPEG, resizing, blur, screenshot and reframing perturbations (default: all "
                            f"of them; or name some: {', '.join(PERTURBATIONS)})")
    run = parser.add_argument_group("run")
    run.add_argument("--face-margin", type=float, default=None,
                     help="with --faces: the margin round each face, as a fraction of its side (default: the one the "
                          "model's threshold was fitted with); --calibrate stores it with the threshold")
    run.add_argument("--faces", action="store_true",
                     help="the app's and CLI's default path: find the faces first, the image's score is its most "
                          "suspicious face's (default: whole images, as the model was trained)")
    run.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="the backbone's dtype (auto: bf16 where native); --calibrate records it, and a detector "
                          "on \"auto\" scores in it wherever it can")
    run.add_argument("--as-published", choices=STORAGE_DTYPES, default=None,
                     help="score the weights as training.publish stores them: float16 (publish --fp16) casts them to "
                          "float16 and back first, so the numbers fitted and measured are the shipped file's (default: "
                          "as the folder stores them); recorded as storage_dtype in metrics.json")
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    return parser.parse_args(argv)


def load_eval_set(spec: DataSpec, split: str) -> datasets.Dataset:
    """The rows to score: the training hold-out split, a held-out source, or all rows (whatever splits the source has)."""
    if split == "validation":
        return load_splits(spec, check=False)[1]
    if split == "test":
        return load_test(spec)
    if split == "held-out":
        if not spec.hold_out_source:
            raise DataError("--split held-out needs --hold-out-source")
        return held_out_set(spec)
    raw = load_raw(spec)
    return with_targets(datasets.concatenate_datasets(list(raw.values())), spec, both_classes=False)


def decode(item, index: int) -> Image.Image:
    """A dataset cell → RGB image, the way training decodes it; a broken file is named."""
    if isinstance(item, Image.Image):
        return item
    try:
        return open_rgb(item)
    except Exception as err:  # PIL raises many types for a bad file
        raise DataError(f"Unreadable image {item.get('path') or f'row {index}'}: {err}") from err


def predict(detector: Detector, dataset: datasets.Dataset, progress: bool = True, perturb=None,
            faces: bool = False) -> tuple[np.ndarray, list[str]]:
    """p(fake) and the file name (when known) of every row, `detector.batch_size` images at a time.

    `perturb` (PIL → PIL) is applied to each image first, for robustness sweeps. `faces=True` takes the
    app's and the CLI's default path: find the faces, judge each, the image's p(fake) is its most
    suspicious face's (the whole image when none is found)."""
    p_fake: list[float] = []
    names: list[str] = []
    with tqdm(total=len(dataset), desc="evaluate", unit="img", disable=not progress) as bar:
        for start in range(0, len(dataset), detector.batch_size):
            cells = dataset[start : start + detector.batch_size]["image"]
            images = [decode(item, start + offset) for offset, item in enumerate(cells)]
            if perturb:
                images = [perturb(image) for image in images]
            names.extend((item.get("path") or "") if isinstance(item, dict) else "" for item in cells)
            p_fake.extend(analysis.p_fake for analysis in detector.analyze_batch(images, faces=faces))
            bar.update(len(images))
    return np.array(p_fake, dtype=float), names


def source_metrics(is_fake: np.ndarray, p_fake: np.ndarray, threshold: float = 0.5) -> dict:
    """What one source's rows can tell: AUC and AP need both classes, FPR needs reals, recall needs fakes.
    FPR (reals called fake), recall (fakes caught) and accuracy are at `threshold`."""
    full = binary_metrics(is_fake, p_fake, threshold)
    n_fake = int(is_fake.sum())
    n_real = int(len(is_fake) - n_fake)
    return {
        "n": full["n"],
        "n_real": n_real,
        "n_fake": n_fake,
        "accuracy": full["accuracy"],
        "roc_auc": full["roc_auc"] if n_real and n_fake else None,
        "average_precision": full["average_precision"] if n_real and n_fake else None,
        "fpr": full["fpr"] if n_real else None,
        "recall": full["recall"] if n_fake else None,
    }


def evaluate(detector: Detector, dataset: datasets.Dataset, source_column: str | None = None,
             progress: bool = True, faces: bool = False, group_column: str | None = None) -> dict:
    """Score `dataset` (columns `image`, `target`[, source_column]) → metrics, per-source metrics, predictions.

    `metrics` are at 0.5; `at_threshold` and the per-source rates at the detector's verdict threshold (its
    stored calibration's, else 0.5), where "reals called fake" is what a user meets. The returned
    `is_fake`/`p_fake`/`files` lists let callers plot or re-threshold without running the model again; with
    `group_column`, `groups` holds each image's group ("" for none), which training.bootstrap draws by.
    """
    p_fake, files = predict(detector, dataset, progress, faces=faces)
    is_fake = np.array(dataset["target"]) == FAKE
    threshold = detector.threshold if detector.threshold is not None else 0.5
    result = {"metrics": binary_metrics(is_fake, p_fake), "at_threshold": binary_metrics(is_fake, p_fake, threshold),
              "per_source": None, "faces": faces, "is_fake": is_fake.tolist(), "p_fake": p_fake.tolist(), "files": files}
    if source_column:
        sources = np.array(dataset[source_column]).astype(str)
        result["sources"] = sources.tolist()
        result["per_source"] = {
            name: source_metrics(is_fake[sources == name], p_fake[sources == name], threshold)
            for name in sorted(set(sources))
        }
    if group_column:
        result["groups"] = ["" if group is None else str(group) for group in dataset[group_column]]
    return result


def verdict_shares(is_fake, p_fake, lower: float, threshold: float) -> dict:
    """The share of the reals and of the fakes each level of the three-level verdict holds (None: no image of that
    class)."""
    is_fake, p_fake = np.asarray(is_fake, dtype=bool), np.asarray(p_fake)
    share = lambda inside: float(np.mean(inside)) if len(inside) else None
    return {name: {"reals": share(inside[~is_fake]), "fakes": share(inside[is_fake])}
            for name, inside in (("likely real", p_fake < lower), ("uncertain", (p_fake >= lower) & (p_fake < threshold)),
                                 ("likely fake", p_fake >= threshold))}


def as_served(result: dict, detector: Detector) -> dict | None:
    """What a user of the folder as published meets on these images: its stored thresholds, the share of reals and
    fakes each verdict holds, and the calibration error of the probabilities it shows (None: no stored calibration)."""
    if detector.threshold is None:
        return None
    is_fake, p_fake = np.array(result["is_fake"], dtype=bool), np.array(result["p_fake"])
    return {"threshold": detector.threshold, "lower_threshold": detector.lower_threshold,
            "ece": expected_calibration_error(is_fake, p_fake) if len(set(is_fake.tolist())) == 2 else None,
            "verdict_shares": verdict_shares(is_fake, p_fake, detector.lower_threshold, detector.threshold)}


def calibrate(result: dict, target_fpr: float, face_margin: float | None = None, per_source: bool = False,
              target_fake_miss: float = 0.05, min_source_reals: int = 0, pooled_cap: float | None = None) -> dict:
    """The calibration map (beta calibration: detector/calibration.py; temperature and bias when its two weights are
    equal) and decision threshold fitted on these predictions, with the metrics they give. (The threshold keeps the
    same images on each side whatever the map: it is monotonic.)
    `face_margin`: the margin round each face the predictions were made with, when they came from face search; the
    detector then crops with it, so the threshold meets the crops it was fitted on.
    `per_source`: `target_fpr` is the mean over the sources of real images (each counting equally), not the share of
    all real images; the result then also holds the share of all reals called fake and each source's.
    `target_fake_miss`: the lower threshold of the three-level verdict lets at most this share of the fakes fall
    below it (never above the threshold); stored with the shares of reals and fakes each level then holds."""
    is_fake, p_fake = np.array(result["is_fake"]), np.array(result["p_fake"])
    sources = result.get("sources") if per_source else None
    if per_source and sources is None:
        raise SystemExit("a threshold per source needs the images' sources: give --source-column")
    fitted = fit_calibration(is_fake, p_fake)
    calibrated = fitted.p_fake(p_fake)
    try:
        threshold = threshold_for_fpr(is_fake, calibrated, target_fpr, sources, min_source_reals if per_source else 0,
                                      pooled_cap if per_source else None)
    except ValueError as err:
        raise SystemExit(f"{err}: lower --min-source-reals") from err
    at_threshold = binary_metrics(is_fake, calibrated, threshold)
    lower = min(threshold_for_miss(is_fake, calibrated, target_fake_miss), threshold)
    levels = verdict_shares(is_fake, calibrated, lower, threshold)
    return {
        **fitted.to_config(),  # {"temperature", "bias"}, or the weights of beta calibration and the bias
        "threshold": threshold,
        "target_fpr": target_fpr,
        "lower_threshold": lower,
        "target_fake_miss": target_fake_miss,
        "verdict_shares": levels,
        **({} if face_margin is None else {"face_margin": face_margin}),
        "fakes_caught": at_threshold["recall"],
        **({} if sources is None else {"target_fpr_per_source": True, "min_source_reals": min_source_reals,
                                       **({} if pooled_cap is None else {"pooled_fpr_cap": pooled_cap}),
                                       "fpr_all_reals": at_threshold["fpr"],
                                       "fpr_by_source": fpr_per_source(is_fake, calibrated, sources, threshold)}),
        **({} if result.get("sources") is None else {"fakes_caught_by_source": caught_per_source(
            is_fake, calibrated, result["sources"], threshold)}),
        "ece_before": expected_calibration_error(is_fake, p_fake),
        "ece_after": expected_calibration_error(is_fake, calibrated),
        "metrics_at_threshold": at_threshold,
        "p_fake_calibrated": calibrated.tolist(),
    }


def at_fitted_threshold(result: dict) -> None:
    """After --calibrate, the rates a user meets are those of the calibrated scores at the fitted threshold: the
    overall and per-source rates are measured again there (the scores themselves stay the raw ones fitted on)."""
    fitted = result["calibration"]
    calibrated = np.array(fitted["p_fake_calibrated"])
    is_fake = np.array(result["is_fake"], dtype=bool)
    result["at_threshold"] = binary_metrics(is_fake, calibrated, fitted["threshold"])
    if result.get("sources"):
        sources = np.array(result["sources"])
        result["per_source"] = {name: source_metrics(is_fake[sources == name], calibrated[sources == name], fitted["threshold"])
                                for name in sorted(set(sources))}


def as_published(loaded, dtype: str | None) -> str:
    """Cast `loaded`'s weights as publish will store them (float16: to float16 and back, in place, before the detector
    folds its batch norms, as loading the published file does); returns the dtype of the weights then scored."""
    stored = stored_dtype(loaded.folder)
    if dtype is None or dtype == stored:
        return stored
    if dtype == "float32":
        raise SystemExit(f"{loaded.folder} stores {stored} weights: they cannot be scored as float32 ones (publish "
                         "copies them as they are)")
    with torch.no_grad():
        for tensor in [*loaded.model.parameters(), *loaded.model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(torch.float16).to(tensor.dtype))
    return dtype


def caught_per_source(is_fake, p_fake, sources, threshold: float) -> dict[str, float]:
    """Share of each source's fake images at or above `threshold` (sources without fakes left out)."""
    is_fake, p_fake, sources = np.asarray(is_fake, dtype=bool), np.asarray(p_fake, dtype=float), np.asarray(sources).astype(str)
    return {name: float(np.mean(p_fake[is_fake & (sources == name)] >= threshold))
            for name in sorted(set(sources[is_fake]))}


def robustness(detector: Detector, dataset: datasets.Dataset, result: dict, progress: bool = True,
               faces: bool = False, names: list[str] | None = None) -> tuple[dict, dict | None]:
    """ROC-AUC on clean images and under each perturbation of training.robustness, scored on the same path as
    `result` (`faces`). With a threshold (the calibration fitted in this run, `result["calibration"]`, else the
    detector's stored one) also the share of reals and of fakes it flags under each: a perturbation can keep the
    AUC and still move every score across the threshold. `names`: only these perturbations."""
    is_fake = np.array(result["is_fake"], dtype=bool)
    fitted = result.get("calibration")
    threshold = fitted["threshold"] if fitted else detector.threshold
    sources = np.array(result["sources"]) if result.get("sources") else None

    def flagged(p_fake: np.ndarray) -> dict:
        if fitted:
            p_fake = Calibration.from_config(fitted).p_fake(p_fake)

        def shares(rows: np.ndarray) -> dict:  # source_metrics: FPR only with reals, recall only with fakes
            measured = source_metrics(is_fake[rows], p_fake[rows], threshold)
            return {"reals_flagged": measured["fpr"], "fakes_caught": measured["recall"]}

        overall = shares(np.ones(len(is_fake), dtype=bool))
        if sources is not None:
            overall["per_source"] = {name: shares(sources == name) for name in sorted(set(sources))}
        return overall

    rows = {"clean": result["metrics"]["roc_auc"]}
    at_threshold = {"clean": flagged(np.array(result["p_fake"]))} if threshold is not None else None
    for name, perturb in PERTURBATIONS.items():
        if names and name not in names:
            continue
        p_fake, _ = predict(detector, dataset, progress, perturb, faces=faces)
        rows[name] = binary_metrics(is_fake, p_fake)["roc_auc"]
        if at_threshold is not None:
            at_threshold[name] = flagged(p_fake)
    return rows, at_threshold


def json_safe(value):
    """NaN (e.g. AUC of a one-class set) → null, so metrics.json is valid JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def write_report(result: dict, output: Path, context: dict) -> dict:
    """metrics.json (context + metrics), predictions.csv, roc.png, confusion_matrix.png; returns what went to JSON."""
    output.mkdir(parents=True, exist_ok=True)
    extras = {key: result[key] for key in ("calibration", "served", "robustness", "robustness_at_threshold") if result.get(key)}
    if "calibration" in extras:
        extras["calibration"] = {k: v for k, v in extras["calibration"].items() if k != "p_fake_calibrated"}
    report = json_safe({**context, "faces": result.get("faces", False), "metrics": result["metrics"],
                        "at_threshold": result.get("at_threshold"), "per_source": result["per_source"], **extras})
    (output / "metrics.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    with (output / "predictions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        extra = {name: result[key] for name, key in (("source", "sources"), ("group", "groups")) if result.get(key)}
        if result.get("calibration"):  # p_fake: the raw score fitted on; this: what the published model says
            extra["p_fake_calibrated"] = [f"{p:.6f}" for p in result["calibration"]["p_fake_calibrated"]]
        writer.writerow(["file", "is_fake", "p_fake", *extra])
        for name, truth, prob, *more in zip(result["files"], result["is_fake"], result["p_fake"], *extra.values()):
            writer.writerow([name, int(truth), f"{prob:.6f}", *more])
    if len(set(result["is_fake"])) == 2:  # a ROC curve needs both classes
        plot_roc(result["is_fake"], result["p_fake"], output / "roc.png", title=f"ROC ({context.get('split', '')})")
    plot_confusion(result["metrics"]["confusion_matrix"], output / "confusion_matrix.png", labels=LABEL_NAMES)
    if result.get("calibration"):
        curves = {"raw": np.array(result["p_fake"]), "calibrated": np.array(result["calibration"]["p_fake_calibrated"])}
        plot_reliability(np.array(result["is_fake"]), curves, output / "reliability.png")
    if result.get("robustness"):
        plot_robustness(result["robustness"], output / "robustness.png")
    return report


def main(argv=None) -> dict:
    args = parse_args(argv)
    configure_logging()
    if args.face_margin is not None and not args.faces:
        raise SystemExit("--face-margin sets the crop round each face found: add --faces (face search)")
    spec = spec_from_args(args)
    dataset = load_eval_set(spec, args.split)
    loaded = load_model(args.model)
    storage_dtype = as_published(loaded, args.as_published)
    # A calibration is fitted on the model's own scores, never on scores through a map the model already carries:
    # publish applies the new map to raw logits.
    detector = Detector(loaded, device=args.device, batch_size=args.batch_size, face_margin=args.face_margin,
                        precision=args.precision, copy_model=False, calibrated=not args.calibrate)
    logger.info("%s: scoring %d images (%s, %s, %s weights%s)", detector.name, len(dataset), args.split,
                f"face search, margin {detector.face_margin:g}" if args.faces else "whole images", storage_dtype,
                ", raw scores to calibrate" if args.calibrate else "")
    result = evaluate(detector, dataset, args.source_column, faces=args.faces, group_column=args.group_column)
    if args.calibrate:
        result["calibration"] = calibrate(result, args.target_fpr, detector.face_margin if args.faces else None,
                                          per_source=args.fpr_per_source, target_fake_miss=args.target_fake_miss,
                                          min_source_reals=args.min_source_reals, pooled_cap=args.pooled_fpr_cap)
        result["calibration"]["precision"] = detector.precision  # the dtype the fitted scores were computed in
        result["calibration"]["scores"] = RAW_SCORES  # fitted on the model's own p(fake); publish checks it
        at_fitted_threshold(result)
    else:
        result["served"] = as_served(result, detector)
    if args.robustness is not None:  # --robustness alone: every perturbation
        result["robustness"], result["robustness_at_threshold"] = robustness(detector, dataset, result, faces=args.faces,
                                                                             names=args.robustness)
    context = {"model": args.model, "dataset": args.dataset, "split": args.split, "data": asdict(spec),
               "precision": detector.precision, "storage_dtype": storage_dtype,
               **({"face_margin": detector.face_margin} if args.faces else {})}
    report = write_report(result, Path(args.output_dir), context)
    m = report["metrics"]
    logger.info("n=%d accuracy=%s ROC-AUC=%s F1=%s FPR=%s", m["n"],
                *(show(m[key]) for key in ("accuracy", "roc_auc", "f1", "fpr")))
    logger.info("wrote %s/metrics.json, roc.png, confusion_matrix.png, predictions.csv", args.output_dir)
    return report


if __name__ == "__main__":
    run_cli(main)
