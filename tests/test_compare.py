"""training.compare: before/after tables read from evaluate's reports, nothing typed in."""
from __future__ import annotations

import json

from training import compare


def report(fpr_studio: float, auc: float | None, threshold: float = 0.7) -> dict:
    return {
        "metrics": {"n": 300, "roc_auc": auc, "average_precision": auc},
        "at_threshold": {"threshold": threshold, "fpr": 0.05, "recall": 0.6},
        "per_source": {
            "london_studio": {"n": 100, "n_real": 100, "n_fake": 0, "fpr": fpr_studio, "recall": None, "roc_auc": None},
            "dfdc_faces": {"n": 200, "n_real": 100, "n_fake": 100, "fpr": 0.02, "recall": 0.5, "roc_auc": 0.75},
        },
    }


def test_table_has_a_column_per_report_and_a_row_per_measurable_rate(tmp_path):
    paths = []
    for name, data in (("before", report(0.934, 0.80)), ("after", report(0.041, 0.85, 0.6))):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        paths.append(f"{name}={path}")
    text = compare.main(["--report", paths[0], "--report", paths[1], "--output", str(tmp_path / "t.md")])
    lines = text.splitlines()
    assert lines[0] == "| | before | after |"
    assert "| `london_studio`: reals called fake | 93.4% | 4.1% |" in lines
    assert "| `dfdc_faces`: ROC-AUC | 0.750 | 0.750 |" in lines
    assert "| threshold (stored) | 0.700 | 0.600 |" in lines
    assert not any("london_studio`: fakes caught" in line for line in lines)  # no fakes: not measurable, not shown
    assert (tmp_path / "t.md").read_text() == text


def test_perturbation_rows_come_from_robustness_reports(tmp_path):
    """A --robustness report adds ROC-AUC and the shares flagged under each perturbation; a report without it shows —."""
    with_sweep = report(0.04, 0.85)
    with_sweep["robustness"] = {"clean": 0.85, "crop_0.7": 0.81}
    with_sweep["calibration"] = {"threshold": 0.9}  # fitted with --calibrate: the perturbed rows are at it
    with_sweep["robustness_at_threshold"] = {
        "clean": {"reals_flagged": 0.05, "fakes_caught": 0.6},
        "crop_0.7": {"reals_flagged": 0.02, "fakes_caught": 0.1,
                     "per_source": {"london_studio": {"reals_flagged": 0.0, "fakes_caught": None},
                                    "dfdc_faces": {"reals_flagged": 0.03, "fakes_caught": 0.2}}}}
    paths = []
    for name, data in (("plain", report(0.04, 0.85)), ("swept", with_sweep)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
        paths += ["--report", f"{name}={tmp_path / f'{name}.json'}"]
    lines = compare.main([*paths, "--output", str(tmp_path / "t.md"), "--per-source-under-perturbations"]).splitlines()
    assert "| crop_0.7: ROC-AUC | — | 0.810 |" in lines
    assert "| crop_0.7: fakes caught | — | 10.0% |" in lines and "| crop_0.7: reals called fake | — | 2.0% |" in lines
    assert "| crop_0.7: `london_studio`: reals called fake | — | 0.0% |" in lines
    assert "| crop_0.7: `dfdc_faces`: fakes caught | — | 20.0% |" in lines
    assert not any("`london_studio`: fakes caught" in line for line in lines)
    assert "| clean: fakes caught | — | 60.0% |" in lines  # at the threshold the perturbed rows use
    short = compare.main([*paths, "--output", str(tmp_path / "s.md")]).splitlines()
    assert "| crop_0.7: ROC-AUC | — | 0.810 |" in short and not any("crop_0.7: `" in line for line in short)
    only = compare.main([*paths, "--output", str(tmp_path / "o.md"), "--robustness-only"]).splitlines()
    assert only[2:4] == ["| images | 300 | 300 |", "| threshold (fitted in the run, else stored) | 0.700 | 0.900 |"]
    assert only[4] == "| clean: ROC-AUC | — | 0.850 |" and not any("london_studio`: reals called fake | 4" in line for line in only)


def test_a_metric_one_class_cannot_give_says_undefined_and_a_missing_one_a_dash(tmp_path):
    """A report on real photos alone: its ROC-AUC and fakes caught are null → "undefined"; the other report's
    perturbation rows, which this one never measured, stay "—"."""
    reals_only = {"metrics": {"n": 50, "roc_auc": None, "average_precision": None},
                  "at_threshold": {"threshold": 0.7, "fpr": 0.04, "recall": None}, "per_source": {},
                  "robustness": {"clean": None, "crop_0.7": None}}
    (tmp_path / "a.json").write_text(json.dumps(report(0.04, 0.85)))
    (tmp_path / "b.json").write_text(json.dumps(reals_only))
    lines = compare.main(["--report", f"mixed={tmp_path / 'a.json'}", "--report", f"reals={tmp_path / 'b.json'}",
                          "--output", str(tmp_path / "t.md")]).splitlines()
    assert "| ROC-AUC | 0.850 | undefined |" in lines
    assert "| fakes caught (recall) | 60.0% | undefined |" in lines
    assert "| crop_0.7: ROC-AUC | — | undefined |" in lines
