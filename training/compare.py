"""Before/after tables from `training.evaluate` reports: overall and per source, whole images and face search.

    python -m training.compare --output docs/generalisation/compare.md \
        --report "before, whole=runs/before/val-whole/metrics.json" \
        --report "before, faces=runs/before/val-faces/metrics.json" \
        --report "after, whole=runs/after/val-whole/metrics.json" ...

Each report is one column. Rows: overall ROC-AUC, AP, FPR and recall at the model's stored threshold, then
per source "reals called fake" (sources of real photos) and "fakes caught" (sources of fakes) at that
threshold, and the source's ROC-AUC where it has both classes; then, for reports made with --robustness, the
same under each perturbation (per source with --per-source-under-perturbations). Every number is read from the
reports.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from detector.errors import DetectorError, run_cli

from .metrics import NOT_MEASURED, fmt, pct


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="append", required=True, metavar="NAME=METRICS_JSON",
                        help="a column: its heading and the metrics.json written by training.evaluate")
    parser.add_argument("--output", required=True, help="Markdown file to write")
    parser.add_argument("--title", default="")
    parser.add_argument("--per-source-under-perturbations", action="store_true",
                        help="also each source's share flagged under each perturbation of a --robustness report")
    parser.add_argument("--robustness-only", action="store_true",
                        help="only the perturbation rows, at the threshold the run fitted (else the stored one)")
    return parser.parse_args(argv)


def held(cell: dict, key: str, render=pct) -> str:
    """A number a report holds, rendered ("undefined" where it is null), or — where the report does not hold it."""
    return render(cell[key]) if key in cell else NOT_MEASURED


def markdown_row(label: str, values: list[str]) -> str:
    return f"| {label} | " + " | ".join(values) + " |"


def table(columns: dict[str, dict], per_source_under_perturbations: bool = False, robustness_only: bool = False) -> str:
    """One Markdown table, a column per report."""
    names = list(columns)
    lines = ["| | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]

    def row(label: str, values: list[str]) -> None:
        lines.append(markdown_row(label, values))

    def overall(key: str) -> list:
        return [(report.get("at_threshold") or report["metrics"]).get(key) for report in columns.values()]

    row("images", [fmt(report["metrics"]["n"]) for report in columns.values()])
    sources = sorted({source for report in columns.values() for source in (report.get("per_source") or {})})
    if robustness_only:
        row("threshold (fitted in the run, else stored)",
            [fmt((report.get("calibration") or {}).get("threshold", value), 3)
             for report, value in zip(columns.values(), overall("threshold"))])
        return "\n".join(lines + perturbation_rows(columns, sources, per_source_under_perturbations)) + "\n"
    row("threshold (stored)", [fmt(value, 3) for value in overall("threshold")])
    if any(report["metrics"].get("roc_auc") is not None for report in columns.values()):
        row("ROC-AUC", [fmt(report["metrics"].get("roc_auc"), 3) for report in columns.values()])
        row("average precision", [fmt(report["metrics"].get("average_precision"), 3) for report in columns.values()])
        row("fakes caught (recall)", [pct(value) for value in overall("recall")])
    row("reals called fake (FPR)", [pct(value) for value in overall("fpr")])
    for source in sources:
        cells = [(report.get("per_source") or {}).get(source) for report in columns.values()]
        if any(cell and cell["n_real"] for cell in cells):
            row(f"`{source}`: reals called fake", [pct(cell["fpr"]) if cell else NOT_MEASURED for cell in cells])
        if any(cell and cell["n_fake"] for cell in cells):
            row(f"`{source}`: fakes caught", [pct(cell["recall"]) if cell else NOT_MEASURED for cell in cells])
        if any(cell and cell.get("roc_auc") is not None for cell in cells):
            row(f"`{source}`: ROC-AUC", [fmt(cell.get("roc_auc"), 3) if cell else NOT_MEASURED for cell in cells])
    return "\n".join(lines + perturbation_rows(columns, sources, per_source_under_perturbations)) + "\n"


def perturbation_rows(columns: dict[str, dict], sources: list[str], per_source: bool) -> list[str]:
    """Rows for the reports made with --robustness: ROC-AUC and the shares flagged under each perturbation."""
    lines: list[str] = []
    row = lambda label, values: lines.append(markdown_row(label, values))  # noqa: E731
    # "clean" again here: its shares are at the threshold the robustness rows use (fitted in the run, else stored)
    perturbations = [name for report in columns.values() for name in (report.get("robustness") or {})]
    for name in dict.fromkeys(perturbations):  # in the reports' order, once each
        row(f"{name}: ROC-AUC", [held(report.get("robustness") or {}, name, lambda value: fmt(value, 3))
                                 for report in columns.values()])
        flagged = [(report.get("robustness_at_threshold") or {}).get(name) or {} for report in columns.values()]
        if any(flagged):
            row(f"{name}: fakes caught", [held(cell, "fakes_caught") for cell in flagged])
            row(f"{name}: reals called fake", [held(cell, "reals_flagged") for cell in flagged])
        if per_source:
            for source in sources:
                cells = [(cell.get("per_source") or {}).get(source) or {} for cell in flagged]
                for key, label in (("reals_flagged", "reals called fake"), ("fakes_caught", "fakes caught")):
                    if any(cell.get(key) is not None for cell in cells):
                        row(f"{name}: `{source}`: {label}", [held(cell, key) for cell in cells])
    return lines


def main(argv=None) -> str:
    args = parse_args(argv)
    columns = {}
    for item in args.report:
        name, _, path = item.rpartition("=")
        if not name:
            raise SystemExit(f"--report must look like NAME=metrics.json, got {item!r}")
        try:
            columns[name] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise DetectorError(f"Could not read the report {path}: {err}. Pass a metrics.json written by "
                                "training.evaluate.") from None
    text = (f"{args.title}\n\n" if args.title else "") + table(columns, args.per_source_under_perturbations, args.robustness_only)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    run_cli(main)
