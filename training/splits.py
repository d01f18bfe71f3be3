"""Which images a split holds, as a CSV: e.g. the photos a model was trained on, to leave them out of a comparison.

    python -m training.splits --dataset runs/refit/manifest_before_ffhq_photos.csv --image-column file \\
        --group-column group --source-column source --val-fraction 0.2 --split train --output runs/bundled_train.csv

The same data options as `training.train` and `training.evaluate` give the same split (`training.data`). Writes one
row per image: `file` (its absolute path, so that files named from different folders still match), `label` (real or
fake), `source` and `group` where the dataset has those columns. `training.bootstrap --exclude` reads it.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path

from detector.atomic import write_text
from detector.errors import run_cli
from detector.logs import configure_logging
from detector.model import LABEL_NAMES

from .data import add_data_arguments, load_splits, load_test, spec_from_args

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = add_data_arguments(parser)
    data.add_argument("--seed", type=int, default=42)
    parser.add_argument("--split", choices=SPLITS, required=True)
    parser.add_argument("--output", type=Path, required=True, help="CSV file to write")
    return parser.parse_args(argv)


def split_rows(args: argparse.Namespace) -> list[dict]:
    """The rows of the chosen split, in the dataset's order."""
    spec = spec_from_args(args)
    part = load_test(spec) if args.split == "test" else load_splits(spec, check=False)[SPLITS.index(args.split)]
    columns = {"source": spec.source_column, "group": spec.group_column}
    rows = []
    for item in part:
        row = {"file": str(Path(item["image"]["path"]).resolve()), "label": LABEL_NAMES[item["target"]]}
        row.update({name: "" if item[column] is None else item[column] for name, column in columns.items() if column})
        rows.append(row)
    return rows


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    configure_logging()
    rows = split_rows(args)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["file", "label"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(args.output, out.getvalue())
    logger.info("%s split of %s: %d images (%d fake) written to %s", args.split, args.dataset, len(rows),
                sum(row["label"] == "fake" for row in rows), args.output)
    return rows


if __name__ == "__main__":
    run_cli(main)
