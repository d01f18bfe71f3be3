"""How much of a difference in "fakes caught at the threshold" is the luck of the validation photos: a paired bootstrap.

    python -m training.bootstrap runs/a/eval/predictions.csv runs/b/eval/predictions.csv --names bundled candidate \\
        --per-source --output docs/x/bootstrap.json

Reads the predictions.csv of two `training.evaluate` runs on the same images (same split; joined on the file column),
draws the images again with replacement, the same draw for both models, refits each model's threshold on the draw
by the rule `training.evaluate --calibrate` uses (`--target-fpr` of the reals flagged; `--per-source`: on average
over the sources of real images, each counting equally), and records the share of fakes it catches. Photos come in groups (a person's press photos, a studio sitter's, a video's frames and its fakes: the
`group` column evaluate writes with --group-column), and photos of a group are alike, so a draw takes whole groups:
each group (an image without one is its own) is drawn with replacement within its stratum, the source and the
labels it holds (real, fake or both), so every draw keeps each source's reals and fakes. Drawing single images of
grouped data would count a group's twenty photos as twenty pieces of evidence and give intervals too narrow.
Thresholds are fitted on the stored scores: calibration maps them monotonically, so the same images fall on
each side. Writes each model's share on the stored images and its 95% interval over the draws, and the same for the
second model minus the first, with the share of draws in which the second catches at least as many.

`--exclude CSV` leaves out the images a CSV lists (its `file` column; `training.splits` writes one), e.g. the photos
one of the two models was trained on, so that both are compared on photos neither has seen.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

import numpy as np

from detector.errors import run_cli
from detector.logs import configure_logging

from .metrics import threshold_for_fpr

logger = logging.getLogger(__name__)


def read_predictions(path: Path) -> dict[str, tuple[int, float, str, str]]:
    """file → (is_fake, p_fake, source, group) from a predictions.csv that `training.evaluate --source-column` wrote;
    the group is "" where the file has no group column or the image no group."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise SystemExit(f"cannot read {path}: {err.strerror or err}") from err
    missing = {"file", "is_fake", "p_fake", "source"} - set(rows[0] if rows else {})
    if missing:
        raise SystemExit(f"{path} has no column {', '.join(sorted(missing))}: give the predictions.csv of "
                         "`python -m training.evaluate ... --source-column source`")
    if "group" not in rows[0]:
        logger.warning("%s has no group column: each image is drawn on its own, which makes the intervals too narrow "
                       "where photos come in groups; evaluate with --group-column group", path)
    return {row["file"]: (int(row["is_fake"]), float(row["p_fake"]), row["source"], row.get("group") or "")
            for row in rows}


def read_excluded(path: Path) -> set[str]:
    """The resolved paths in a CSV's `file` column (relative ones from the CSV's folder, as manifests name them)."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise SystemExit(f"cannot read {path}: {err.strerror or err}") from err
    if rows and "file" not in rows[0]:
        raise SystemExit(f"{path} has no file column: write it with `python -m training.splits`")
    return {str((path.parent / row["file"]).resolve()) for row in rows}


def without(table: dict, excluded: set[str]) -> dict:
    """The predictions whose image (resolved from the working folder, as evaluate wrote it) is not excluded."""
    return {file: row for file, row in table.items() if str(Path(file).resolve()) not in excluded}


def fakes_caught(is_fake: np.ndarray, p_fake: np.ndarray, sources: np.ndarray | None, target_fpr: float) -> float:
    """Share of the fakes at or above the threshold fitted on these scores by evaluate's rule."""
    threshold = threshold_for_fpr(is_fake, p_fake, target_fpr, sources)
    return float(np.mean(p_fake[is_fake] >= threshold))


def resampling_units(groups) -> np.ndarray:
    """Each image's unit of resampling, a number: its group's, or its own where it has no group ("", None)."""
    groups = np.array(["" if group is None else str(group) for group in groups], dtype=object)
    alone = np.isin(groups, ["", "None", "nan"])
    units = np.empty(len(groups), dtype=np.int64)
    units[~alone] = np.unique(groups[~alone], return_inverse=True)[1]
    units[alone] = units[~alone].max(initial=-1) + 1 + np.arange(alone.sum())
    return units


class GroupDraw:
    """Draws of whole groups with replacement, each stratum (the sources and the labels a group holds) keeping its
    number of groups; an image without a group is a group of one, so ungrouped data is drawn image by image within
    each (source, label) cell."""

    def __init__(self, is_fake: np.ndarray, sources: np.ndarray, groups) -> None:
        units = resampling_units(groups)
        self.order = np.argsort(units, kind="stable")  # the images, unit by unit
        _, self.starts, self.sizes = np.unique(units[self.order], return_index=True, return_counts=True)
        members = np.split(self.order, self.starts[1:])
        keys = [(tuple(sorted(set(sources[rows]))), tuple(sorted(set(is_fake[rows].tolist())))) for rows in members]
        self.strata = [np.array([u for u, key in enumerate(keys) if key == stratum]) for stratum in sorted(set(keys))]

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """The images of one draw (with repeats)."""
        chosen = np.concatenate([rng.choice(stratum, size=len(stratum), replace=True) for stratum in self.strata])
        sizes = self.sizes[chosen]
        first = np.repeat(self.starts[chosen] - np.cumsum(sizes) + sizes, sizes)
        return self.order[first + np.arange(sizes.sum())]


def paired_bootstrap(is_fake: np.ndarray, scores: list[np.ndarray], sources: np.ndarray, target_fpr: float,
                     per_source: bool, replicates: int, seed: int, groups=None) -> np.ndarray:
    """Fakes caught per draw and model: an array (replicates, models). Each draw takes whole groups (`groups`: one per
    image, "" or None for none; None: every image its own) and keeps each stratum's number of groups, so every
    source's reals still count once in the per-source mean."""
    draw_images = GroupDraw(is_fake, sources, [None] * len(is_fake) if groups is None else groups)
    rng = np.random.default_rng(seed)
    caught = np.empty((replicates, len(scores)))
    for r in range(replicates):
        draw = draw_images(rng)
        for m, p in enumerate(scores):
            caught[r, m] = fakes_caught(is_fake[draw], p[draw], sources[draw] if per_source else None, target_fpr)
    return caught


def summary(point: float, draws: np.ndarray) -> dict:
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"stored_images": point, "interval_95": [float(low), float(high)], "draws_median": float(np.median(draws))}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", nargs=2, type=Path, help="two evaluate predictions.csv files, same images")
    parser.add_argument("--names", nargs=2, default=["first", "second"])
    parser.add_argument("--target-fpr", type=float, default=0.05)
    parser.add_argument("--per-source", action="store_true", help="the target is the mean over the sources of reals")
    parser.add_argument("--replicates", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exclude", type=Path, metavar="CSV",
                        help="leave out the images this CSV's file column lists (e.g. a model's training photos, "
                             "from python -m training.splits)")
    parser.add_argument("--output", type=Path, help="write the result as JSON here")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    configure_logging()
    first, second = (read_predictions(path) for path in args.predictions)
    if args.exclude:
        excluded = read_excluded(args.exclude)
        first, second = (without(table, excluded) for table in (first, second))
        logger.info("%d images left after leaving out those %s lists", len(first), args.exclude)
        if not first or not any(row[0] for row in first.values()) or all(row[0] for row in first.values()):
            raise SystemExit(f"after leaving out the images {args.exclude} lists, {len(first)} are left, which do not "
                             "hold both real and fake photos: nothing to compare")
    if set(first) != set(second):
        only = sorted(set(first) ^ set(second))
        raise SystemExit(f"the two files score different images ({len(only)} in one only, e.g. {only[0]}): evaluate "
                         "both models on the same split (same --dataset, --seed and --val-fraction)")
    files = sorted(first)
    if any(first[f][0] != second[f][0] or first[f][2] != second[f][2] for f in files):
        raise SystemExit("the two files give some image different labels or sources: they come from different data")
    grouped = [table for table in (first, second) if any(row[3] for row in table.values())]
    if len(grouped) == 2 and any(first[f][3] != second[f][3] for f in files):
        raise SystemExit("the two files give some image different groups: evaluate both with the same --group-column")
    is_fake = np.array([first[f][0] for f in files], dtype=bool)
    sources = np.array([first[f][2] for f in files])
    groups = [grouped[0][f][3] for f in files] if grouped else None
    scores = [np.array([table[f][1] for f in files]) for table in (first, second)]
    points = [fakes_caught(is_fake, p, sources if args.per_source else None, args.target_fpr) for p in scores]
    draws = paired_bootstrap(is_fake, scores, sources, args.target_fpr, args.per_source, args.replicates, args.seed,
                             groups)
    difference = draws[:, 1] - draws[:, 0]
    result = {
        "predictions": {name: str(path) for name, path in zip(args.names, args.predictions)},
        "images": len(files), "groups": len(np.unique(resampling_units(groups or [None] * len(files)))),
        "target_fpr": args.target_fpr, "per_source": args.per_source,
        "replicates": args.replicates, "seed": args.seed,
        "excluded": str(args.exclude) if args.exclude else None,
        "fakes_caught": {name: summary(point, draws[:, m]) for m, (name, point) in enumerate(zip(args.names, points))},
        "difference": {**summary(points[1] - points[0], difference),
                       "share_of_draws_second_at_least_first": float(np.mean(difference >= 0))},
    }
    for name in args.names:
        part = result["fakes_caught"][name]
        logger.info("%s: %.1f%% of fakes caught (95%% of draws %.1f–%.1f%%)", name, 100 * part["stored_images"],
                    *(100 * v for v in part["interval_95"]))
    logger.info("%s − %s: %+.1f points (95%% of draws %+.1f to %+.1f); %s catches at least as many in %.0f%% of draws",
                args.names[1], args.names[0], 100 * result["difference"]["stored_images"],
                *(100 * v for v in result["difference"]["interval_95"]), args.names[1],
                100 * result["difference"]["share_of_draws_second_at_least_first"])
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    run_cli(main)
