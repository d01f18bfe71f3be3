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
