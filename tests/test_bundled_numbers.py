"""The bundled folder's stored numbers are the shipped file's: its threshold, rates and confusion matrix come back
from its own predictions, and re-scoring photos with the folder as shipped gives those predictions back."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import ROOT, SHARED_DATA
from detector import Detector
from detector.model import BUNDLED_MODEL, stored_dtype

FITTED = ROOT / "docs" / "face-finder"  # the evaluation the bundled calibration was fitted by


def predictions() -> list[dict]:
    with (FITTED / "predictions.csv").open() as f:
        return list(csv.DictReader(f))


def test_the_stored_numbers_are_those_of_the_stored_predictions():
    config = json.loads((BUNDLED_MODEL / "config.json").read_text())["calibration"]
    fitted = json.loads((FITTED / "eval.json").read_text())
    rows = predictions()
    is_fake = np.array([row["is_fake"] == "1" for row in rows])
    p = np.array([float(row["p_fake_calibrated"]) for row in rows])
    called = p >= config["threshold"]
    matrix = [[int(np.sum(~is_fake & ~called)), int(np.sum(~is_fake & called))],
              [int(np.sum(is_fake & ~called)), int(np.sum(is_fake & called))]]
    assert matrix == fitted["calibration"]["metrics_at_threshold"]["confusion_matrix"]
    assert config["fakes_caught"] == pytest.approx(np.mean(called[is_fake]))
    assert config["fpr_all_reals"] == pytest.approx(np.mean(called[~is_fake]))
    assert config["scores"] == "raw" and config["storage_dtype"] == stored_dtype(BUNDLED_MODEL) == fitted["storage_dtype"]
    gap = np.min(np.abs(p - config["threshold"]))
    assert gap > 1e-5  # no validation photo sits on the threshold, where rounding would move it


@pytest.mark.skipif(not (SHARED_DATA / "manifest.csv").is_file(), reason="needs ../shared/data")
def test_the_shipped_folder_gives_back_its_fitted_scores_and_verdicts():
    """The photos nearest each threshold (where a changed weight or finder would show first) and a random draw,
    re-scored through face search with the bundled folder as loaded from disk."""
    config = json.loads((BUNDLED_MODEL / "config.json").read_text())["calibration"]
    rows = predictions()
    p = np.array([float(row["p_fake_calibrated"]) for row in rows])
    chosen = set(np.argsort(np.abs(p - config["threshold"]))[:12]) | set(np.argsort(np.abs(p - config["lower_threshold"]))[:8])
    chosen |= set(np.random.default_rng(0).choice(len(rows), 12, replace=False))
    chosen = sorted(chosen)
    detector = Detector.from_pretrained(BUNDLED_MODEL)
    analyses = detector.analyze_batch([SHARED_DATA / rows[i]["file"] for i in chosen])
    served = np.array([analysis.p_fake for analysis in analyses])
    np.testing.assert_allclose(served, p[chosen], atol=2e-5)
    assert [a.verdict for a in analyses] == [detector.verdict(float(p[i])) for i in chosen]
