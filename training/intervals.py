"""95% intervals of a report's numbers at the threshold it was scored at, by drawing whole groups again.

    python -m training.intervals runs/x/test --output docs/x/test_intervals.json

REPORT is the folder `training.evaluate` wrote (metrics.json and predictions.csv, evaluated with --source-column and
--group-column) on a published folder, without --calibrate: the threshold is the one the folder stores
(`served.threshold`), so the numbers are those a user meets. Each draw takes whole groups with replacement within
each stratum (`training.bootstrap.GroupDraw`: a person's photos, a video's frames and its fakes go together), and
measures ROC-AUC, the share of fakes caught and of reals flagged at that threshold, and each source's share. Writes,
for each number, its value on the stored photos and the 2.5th and 97.5th percentiles over the draws. `--exclude CSV`
leaves out the photos a CSV lists (`training.splits`), e.g. those the model was trained on.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from detector.atomic import write_text
from detector.errors import run_cli
from detector.logs import configure_logging

from .bootstrap import GroupDraw, read_excluded, read_predictions, summary, without

logger = logging.getLogger(__name__)


def numbers(is_fake: np.ndarray, p_fake: np.ndarray, sources: np.ndarray, threshold: float) -> dict[str, float | None]:
    """ROC-AUC, fakes caught and reals flagged at `threshold`, overall and per source (None where a set is empty)."""
    share = lambda flags: float(np.mean(flags)) if len(flags) else None
    flagged = p_fake >= threshold
    result = {"roc_auc": float(roc_auc_score(is_fake, p_fake)) if len(set(is_fake.tolist())) == 2 else None,
              "fakes_caught": share(flagged[is_fake]), "reals_flagged": share(flagged[~is_fake])}
    for source in sorted(set(sources.tolist())):
        here = sources == source
        result[f"{source}: reals flagged"] = share(flagged[here & ~is_fake])
        result[f"{source}: fakes caught"] = share(flagged[here & is_fake])
    return {key: value for key, value in result.items() if value is not None or key == "roc_auc"}


def intervals(is_fake: np.ndarray, p_fake: np.ndarray, sources: np.ndarray, groups, threshold: float,
              replicates: int, seed: int) -> dict[str, dict]:
    """Each number's value on these photos and its 95% interval over `replicates` group draws."""
    point = numbers(is_fake, p_fake, sources, threshold)
    draw = GroupDraw(is_fake, sources, groups)
    rng = np.random.default_rng(seed)
    draws = {key: [] for key in point}
    for _ in range(replicates):
        rows = draw(rng)
        measured = numbers(is_fake[rows], p_fake[rows], sources[rows], threshold)
        for key in draws:
            if measured.get(key) is not None:
                draws[key].append(measured[key])
    return {key: summary(value, np.array(draws[key])) if value is not None and draws[key] else {"stored_images": None}
            for key, value in point.items()}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="a folder training.evaluate wrote (metrics.json, predictions.csv)")
    parser.add_argument("--replicates", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exclude", type=Path, metavar="CSV",
                        help="leave out the images this CSV's file column lists (python -m training.splits)")
    parser.add_argument("--output", type=Path, help="write the intervals as JSON here")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    configure_logging()
    try:
        report = json.loads((args.report / "metrics.json").read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"cannot read {args.report / 'metrics.json'}: {err}: give a folder training.evaluate wrote") from err
    threshold = (report.get("served") or {}).get("threshold")
    if threshold is None:
        raise SystemExit(f"{args.report} was not scored at a stored threshold (no `served` in metrics.json): evaluate a "
                         "published folder, without --calibrate")
    table = read_predictions(args.report / "predictions.csv")
    if args.exclude:
        table = without(table, read_excluded(args.exclude))
        if not table:
            raise SystemExit(f"{args.exclude} lists every image of {args.report}: nothing is left to measure")
    rows = list(table.values())
    is_fake = np.array([row[0] for row in rows], dtype=bool)
    p_fake = np.array([row[1] for row in rows])
    sources = np.array([row[2] for row in rows])
    groups = [row[3] for row in rows]
    result = {"report": str(args.report), "split": report.get("split"), "threshold": threshold, "images": len(rows),
              "excluded": str(args.exclude) if args.exclude else None,
              "replicates": args.replicates, "seed": args.seed,
              "numbers": intervals(is_fake, p_fake, sources, groups, threshold, args.replicates, args.seed)}
    for key in ("roc_auc", "fakes_caught", "reals_flagged"):
        part = result["numbers"][key]
        if part["stored_images"] is not None:
            logger.info("%s: %.3f (95%% of draws %.3f–%.3f)", key, part["stored_images"], *part["interval_95"])
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.output, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    run_cli(main)
