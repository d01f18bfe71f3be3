"""How well a threshold rule holds on photos it was not fitted on: fit on half of the validation groups, measure on
the other half, many times over.

    python -m training.threshold_stability runs/x/eval/predictions.csv --output docs/x/threshold_stability.md

PREDICTIONS is the predictions.csv of `training.evaluate --calibrate` (columns is_fake, p_fake, source, group). Each
repeat draws half of the groups of every source (a group, such as a person's photos or a video's frames, goes whole
to one half; a photo without a group is its own), fits each rule's threshold on that half and measures, on the other
half, the share of reals flagged averaged over the sources the rule counts, the share of all reals flagged, and the
share of fakes caught. The rules compared: every real source counting alike (the rule before 2026-12-07) and the
rule of docs/thresholds.md (sources of at least --min-source-reals photos, a pooled cap).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from detector.errors import run_cli
from detector.logs import configure_logging

from . import bootstrap
from .metrics import threshold_for_fpr

logger = logging.getLogger(__name__)


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    """The columns of a predictions.csv (`training.bootstrap.read_predictions`) as arrays; `group` is each row's unit
    of resampling (`training.bootstrap.resampling_units`: its group, or itself where it has none)."""
    rows = list(bootstrap.read_predictions(Path(path)).values())
    return {"is_fake": np.array([row[0] for row in rows], dtype=bool), "p_fake": np.array([row[1] for row in rows]),
            "source": np.array([row[2] for row in rows]), "group": bootstrap.resampling_units([row[3] for row in rows])}


def halves(data: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A boolean mask: the rows of half of each source's groups (the other half is ~mask)."""
    chosen = np.zeros(len(data["p_fake"]), dtype=bool)
    for source in np.unique(data["source"]):
        rows = data["source"] == source
        groups = np.unique(data["group"][rows])
        picked = rng.permutation(groups)[: (len(groups) + rng.integers(0, 2)) // 2]
        chosen |= rows & np.isin(data["group"], picked)
    return chosen


def rates(data: dict[str, np.ndarray], rows: np.ndarray, threshold: float, counted: list[str]) -> dict[str, float]:
    is_fake, p, sources = data["is_fake"][rows], data["p_fake"][rows], data["source"][rows]
    reals = ~is_fake
    per_source = [np.mean(p[reals & (sources == name)] >= threshold) for name in counted if np.any(reals & (sources == name))]
    return {"mean_over_sources": float(np.mean(per_source)), "all_reals": float(np.mean(p[reals] >= threshold)),
            "fakes_caught": float(np.mean(p[is_fake] >= threshold))}


RULES = {"every source alike (before)": {"min_source_reals": 0, "pooled_cap": None},
         "docs/thresholds.md": {"min_source_reals": 50, "pooled_cap": 0.05}}


def stability(data: dict[str, np.ndarray], repeats: int, target: float, rules: dict, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    found = {name: {"fitted": [], "measured": []} for name in rules}
    for _ in range(repeats):
        fit = halves(data, rng)
        for name, rule in rules.items():
            # Half of the groups: the minimum size scales with the half, so the same sources count as on the whole set.
            smallest = rule["min_source_reals"] // 2
            reals = ~data["is_fake"][fit]
            sizes = {s: int(np.sum(reals & (data["source"][fit] == s))) for s in np.unique(data["source"][fit][reals])}
            counted = [s for s, n in sizes.items() if n >= smallest]
            threshold = threshold_for_fpr(data["is_fake"][fit], data["p_fake"][fit], target, data["source"][fit],
                                          smallest, rule["pooled_cap"])
            found[name]["fitted"].append(rates(data, fit, threshold, counted))
            found[name]["measured"].append(rates(data, ~fit, threshold, counted))
    summary = {}
    for name, runs in found.items():
        summary[name] = {side: {key: [float(np.percentile([r[key] for r in runs[side]], q)) for q in (5, 50, 95)]
                                for key in ("mean_over_sources", "all_reals", "fakes_caught")} for side in runs}
    return summary


def table(summary: dict, repeats: int, target: float) -> str:
    lines = [f"Threshold fitted on half of the validation groups, measured on the other half; {repeats} draws; "
             f"target {target:.0%}. Median (5th–95th percentile).", "",
             "| rule | half | reals flagged, mean over the sources counted | all reals flagged | fakes caught |",
             "| --- | --- | ---: | ---: | ---: |"]
    show = lambda v: f"{v[1]:.1%} ({v[0]:.1%}–{v[2]:.1%})"
    for name, sides in summary.items():
        for side, label in (("fitted", "fitted on"), ("measured", "other half")):
            s = sides[side]
            lines.append(f"| {name} | {label} | {show(s['mean_over_sources'])} | {show(s['all_reals'])} | "
                         f"{show(s['fakes_caught'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--target-fpr", type=float, default=0.05)
    parser.add_argument("--min-source-reals", type=int, default=50)
    parser.add_argument("--pooled-fpr-cap", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="write the table (Markdown) here, and the numbers beside it as JSON")
    args = parser.parse_args(argv)
    configure_logging()
    rules = {**RULES, "docs/thresholds.md": {"min_source_reals": args.min_source_reals, "pooled_cap": args.pooled_fpr_cap}}
    summary = stability(read_predictions(args.predictions), args.repeats, args.target_fpr, rules, args.seed)
    text = table(summary, args.repeats, args.target_fpr)
    logger.info("\n%s", text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        args.output.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    run_cli(main)
