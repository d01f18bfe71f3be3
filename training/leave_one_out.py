"""Leave-one-source-out: for each source with fakes, train without it, then test on it.

    python -m training.leave_one_out --output-dir runs/loso \
        --dataset ../shared/data/manifest.csv --image-column file --group-column group --source-column source \
        --img-size 96 --epochs 6 --max-steps-per-epoch 150 --optimizer adamw --lr 1.5e-3 --scheduler cosine

Every option other than --output-dir and --sources goes to `training.train` unchanged, so every row
trains with the same schedule and the table can say which. The test set of a row is every image of
the held-out source, plus the other class's validation images when the source has one class only
(a generator's fakes are tested against real photos the run never trained on). A finished row is
kept and an interrupted one resumed, so the command can simply be run again after a stop.

Writes OUTPUT/<source>/ (the training run, and eval/ with its held-out metrics and plots) and
OUTPUT/leave_one_out.json and OUTPUT/leave_one_out.md (the table).
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from detector import Detector
from detector.calibration import WEIGHTS_KEY, Calibration
from detector.faces import DEFAULT_MARGIN
from detector.errors import run_cli
from detector.logs import configure_logging
from detector.model import LABEL_NAMES

from . import TRAINING_FILE, train
from .data import held_out_set, load_splits, spec_from_args
from .evaluate import calibrate, evaluate, json_safe, load_eval_set, write_report
from .metrics import NOT_MEASURED, UNDEFINED, fmt

FAKE = LABEL_NAMES.index("fake")
TARGET_FPR = 0.05
logger = logging.getLogger(__name__)


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--sources", nargs="+", help="the sources to hold out (default: every source with fake images)")
    parser.add_argument("--face-margin", type=float, default=DEFAULT_MARGIN,
                        help="face search's margin round each face, as a fraction of its side, for every row's threshold "
                             "and face-search scores (default: %(default)s)")
    parser.add_argument("--fpr-per-source", action="store_true",
                        help="fit each row's threshold so that 5%% of real images are flagged on average over the sources of "
                             "real images, each counting equally (training.evaluate --fpr-per-source), not 5%% of all")
    parser.add_argument("--rescore", action="store_true",
                        help="score finished rows again (e.g. with another --face-margin) instead of keeping their reports")
    return parser.parse_known_args(argv)


def fake_sources(spec) -> list[str]:
    """Sources that hold at least one fake image, in name order."""
    dataset = load_eval_set(replace(spec, hold_out_source=None), "all")
    sources = np.array(dataset[spec.source_column]).astype(str)
    return sorted(set(sources[np.array(dataset["target"]) == FAKE]))


def run_row(source: str, train_argv: list[str], output: Path, face_margin: float = DEFAULT_MARGIN,
            rescore: bool = False, per_source: bool = False) -> dict:
    """Train without `source` (resuming an interrupted run), then score the held-out set once (again with `rescore`)."""
    report_path = output / "eval" / "metrics.json"
    if report_path.is_file() and not rescore:
        return json.loads(report_path.read_text())
    argv = [*train_argv, "--hold-out-source", source, "--output-dir", str(output)]
    if not (rescore and (output / "best" / TRAINING_FILE).is_file()):
        if (output / "last" / "trainer_state.json").is_file():
            argv.append("--resume")
        train.main(argv)
    spec = spec_from_args(train.parse_args(argv))
    detector = Detector.from_pretrained(output / "best", face_margin=face_margin)
    # The row's own calibration, fitted as the bundled model's is: the calibration map and 5% FPR on its in-domain validation
    # split, through face search (the path the app and the CLI take); with `per_source`, 5% on average over its sources
    # of real images.
    fitted = calibrate(evaluate(detector, load_splits(spec, check=False)[1], spec.source_column, progress=False, faces=True),
                       TARGET_FPR, detector.face_margin, per_source=per_source)
    detector.calibration, detector.threshold = Calibration.from_config(fitted), fitted["threshold"]
    held = held_out_set(spec)
    result = evaluate(detector, held, spec.source_column)
    # The app's and the CLI's default path too: find the faces, judge the most suspicious one.
    searched = evaluate(detector, held, spec.source_column, faces=True)
    trained = json.loads((output / "best" / TRAINING_FILE).read_text())
    context = {"model": str(output / "best"), "split": "held-out", "hold_out_source": source, "data": asdict(spec),
               "in_domain_validation": trained["validation"], "train_arguments": train_argv,
               "threshold": {key: fitted[key] for key in ("temperature", WEIGHTS_KEY, "bias", "threshold", "target_fpr",
                                                          "target_fpr_per_source") if key in fitted},
               "face_margin": face_margin,
               "face_search": json_safe({key: searched[key] for key in ("metrics", "at_threshold", "per_source")})}
    return write_report(result, output / "eval", context)


def canonical(train_argv: list[str]) -> tuple[tuple[str, ...], ...]:
    """The training arguments as a set of options, each with its values: two runs given the same options in another
    order trained the same way."""
    groups: list[tuple[str, ...]] = []
    for token in train_argv:
        if token.startswith("--") or not groups:
            groups.append((token,))
        else:
            groups[-1] += (token,)
    return tuple(sorted(groups))


def merged(reports: list[dict]) -> dict:
    """Several leave_one_out.json reports as one: every row, each keeping the training arguments of its run (a source
    held out in more than one report keeps the last)."""
    rows = {}
    for report in reports:
        for source, row in report["rows"].items():
            rows[source] = {**row, "train_arguments": row.get("train_arguments") or report["train_arguments"]}
    return {"rows": rows, "train_arguments": None}


def table(reports: dict[str, dict], train_argv: list[str] | None) -> str:
    """The Markdown table, with the training arguments the rows shared; rows trained differently (a report made by
    `merged`, whose `train_argv` is None) are listed by the arguments of each group of them."""
    groups: dict[tuple, tuple[list[str], list[str]]] = {}
    for source, report in reports.items():
        argv = report.get("train_arguments") or train_argv or []
        groups.setdefault(canonical(argv), (argv, []))[1].append(source)
    if len(groups) == 1:
        training = [f"Same training for every row: `{shlex.join(next(iter(groups.values()))[0])}`"]
    else:
        training = ["Training, by row:"] + [
            f"- {', '.join(f'`{s}`' for s in sources)}: `{shlex.join(argv)}`" for argv, sources in groups.values()]
    lines = [
        "Leave-one-source-out: each row trains without one source, then tests on it. Fakes caught and reals "
        "called fake are at the row's own threshold (temperature, bias and 5% FPR fitted with face search on its in-domain "
        "validation split, as the bundled model's), or at 0.5 for rows measured before thresholds were fitted."
        + (" The 5% is the mean over the sources of real images, each counting equally."
           if any((r.get("threshold") or {}).get("target_fpr_per_source") for r in reports.values()) else ""),
        "",
        *training,
        "",
        "Face search crops each face with a margin of "
        + ", ".join(sorted({f"{report.get('face_margin', DEFAULT_MARGIN):g}" for report in reports.values()}))
        + " of its side.",
        "",
        f"{UNDEFINED}: a metric the test set's classes cannot give (ROC-AUC of real photos alone); {NOT_MEASURED}: not "
        "measured for that row.",
        "",
        "| held-out source | test real | test fake | in-domain val AUC | held-out AUC | held-out AP | threshold "
        "| fakes caught | reals called fake | with face search: AUC | fakes caught | reals called fake |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for source, report in reports.items():
        m = report.get("at_threshold") or report["metrics"]
        (tn, fp), (fn, tp) = m["confusion_matrix"]
        searched = (report.get("face_search") or {}).get("at_threshold") or {}
        lines.append(" | ".join([
            f"| `{source}`", fmt(tn + fp), fmt(fn + tp), fmt(report["in_domain_validation"]["roc_auc"], 3),
            fmt(m["roc_auc"], 3), fmt(m["average_precision"], 3), fmt(m.get("threshold", 0.5), 3),
            fmt(m["recall"] if fn + tp else None, 3), fmt(m["fpr"] if tn + fp else None, 3),
            *([fmt(searched.get("roc_auc"), 3), fmt(searched.get("recall") if fn + tp else None, 3),
               fmt(searched.get("fpr") if tn + fp else None, 3)] if searched else [NOT_MEASURED] * 3),
        ]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict[str, dict]:
    args, train_argv = parse_args(argv)
    configure_logging()
    output = Path(args.output_dir)
    spec = spec_from_args(train.parse_args([*train_argv, "--output-dir", str(output)]))
    if not spec.source_column:
        raise SystemExit("leave-one-source-out needs --source-column")
    sources = args.sources or fake_sources(spec)
    reports = {}
    for source in sources:
        logger.info("holding out %s", source)
        reports[source] = run_row(source, train_argv, output / source, args.face_margin, args.rescore, args.fpr_per_source)
    output.mkdir(parents=True, exist_ok=True)
    (output / "leave_one_out.json").write_text(json.dumps({"train_arguments": train_argv, "rows": reports}, indent=2) + "\n")
    text = table(reports, train_argv)
    (output / "leave_one_out.md").write_text(text)
    logger.info("leave-one-source-out table:\n%s", text)
    return reports


if __name__ == "__main__":
    run_cli(main)
