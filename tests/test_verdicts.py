"""One verdict with three levels, the same everywhere: likely fake at or above the threshold, likely real below the
lower threshold, uncertain between; fitted at calibration time, with a default for models calibrated before."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from detector import Detector
from detector.report import result_row
from detector.verdicts import DEFAULT_LOWER_THRESHOLD, LIKELY_FAKE, LIKELY_REAL, UNCERTAIN, VERDICTS, verdict_of
from training.evaluate import calibrate
from training.metrics import threshold_for_miss


def with_calibration(model_dir, tmp_path, calibration):
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    for name in ("model.safetensors", "README.md"):
        (folder / name).symlink_to(model_dir / name)
    config = json.loads((model_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "calibration": calibration}))
    return folder


@pytest.mark.parametrize("p, verdict", [(0.95, LIKELY_FAKE), (0.8, LIKELY_FAKE), (0.7999, UNCERTAIN), (0.3, UNCERTAIN),
                                        (0.2999, LIKELY_REAL), (0.0, LIKELY_REAL)])
def test_the_levels_follow_the_two_thresholds(p, verdict):
    assert verdict_of(p, 0.3, 0.8) == verdict


def test_no_output_pairs_a_verdict_with_a_probability_on_the_wrong_side(model_dir, tmp_path, face_paths):
    """Thresholds placed inside the test model's scores, so that every level occurs; then every analysis (whole image
    and per face), every JSON row and every face row agrees with its own p(fake)."""
    detector = Detector.from_pretrained(model_dir, precision="fp32")
    scores = sorted(a.p_fake for a in detector.analyze_batch(face_paths * 2, faces=False))
    lower, upper = float(np.quantile(scores, 0.3)), float(np.quantile(scores, 0.7))
    calibrated = Detector.from_pretrained(with_calibration(model_dir, tmp_path, {"threshold": upper, "lower_threshold": lower}),
                                          precision="fp32")
    seen = set()
    for faces in (False, True):
        for analysis in calibrated.analyze_batch(face_paths, faces=faces):
            row = result_row("x.jpg", analysis)
            pairs = [(analysis.verdict, analysis.p_fake), (row["verdict"], row["probabilities"]["fake"])]
            pairs += [(face["verdict"], face["probabilities"]["fake"]) for face in row["faces"]]
            for verdict, p in pairs:
                assert verdict in VERDICTS
                assert verdict != LIKELY_REAL or p < lower
                assert verdict != LIKELY_FAKE or p >= upper
                assert verdict != UNCERTAIN or lower <= p < upper
                seen.add(verdict)
            assert (row["label"] == "fake") == (row["verdict"] == LIKELY_FAKE)  # the old field keeps its meaning
    assert len(seen) >= 2


def test_an_old_config_without_the_lower_threshold_still_loads(model_dir, tmp_path):
    detector = Detector.from_pretrained(with_calibration(model_dir, tmp_path, {"threshold": 0.82, "temperature": 0.5}))
    assert detector.lower_threshold == DEFAULT_LOWER_THRESHOLD and detector.verdict(0.6) == UNCERTAIN
    assert detector.verdict(0.49) == LIKELY_REAL and detector.verdict(0.82) == LIKELY_FAKE
    low = Detector.from_pretrained(with_calibration(model_dir, tmp_path / "low", {"threshold": 0.3}))
    assert low.lower_threshold == 0.3 and low.verdict(0.29) == LIKELY_REAL  # never above the threshold


def test_a_lower_threshold_above_the_threshold_is_refused(model_dir, tmp_path):
    from detector import DetectorError

    with pytest.raises(DetectorError, match="lower_threshold"):
        Detector.from_pretrained(with_calibration(model_dir, tmp_path, {"threshold": 0.5, "lower_threshold": 0.6}))


def test_calibration_fits_the_lower_threshold_by_its_stated_rule():
    rng = np.random.default_rng(0)
    is_fake = np.r_[np.zeros(400, bool), np.ones(400, bool)]
    p_fake = np.r_[rng.beta(2, 5, 400), rng.beta(5, 2, 400)]
    fitted = calibrate({"is_fake": is_fake.tolist(), "p_fake": p_fake.tolist()}, target_fpr=0.05, target_fake_miss=0.05)
    calibrated = np.array(fitted["p_fake_calibrated"])
    below = calibrated[is_fake] < fitted["lower_threshold"]
    assert below.mean() <= 0.05 and (calibrated[is_fake] < np.nextafter(fitted["lower_threshold"], 1)).mean() > 0.04
    assert fitted["lower_threshold"] <= fitted["threshold"]
    shares = fitted["verdict_shares"]
    assert shares["likely real"]["fakes"] == below.mean()
    assert sum(level["reals"] for level in shares.values()) == pytest.approx(1.0)
    # midway between the lowest fake allowed above it and the score below that fake, so rounding moves neither
    assert threshold_for_miss([True, True, False], [0.2, 0.9, 0.1], 0.0) == pytest.approx(0.15)
    assert threshold_for_miss([True, True], [0.2, 0.9], 0.0) == 0.2  # nothing below: the fake's own score
    sources = ["photos"] * 400 + ["gan"] * 200 + ["diffusion"] * 200
    by_source = calibrate({"is_fake": is_fake.tolist(), "p_fake": p_fake.tolist(), "sources": sources}, target_fpr=0.05,
                          per_source=True)["fakes_caught_by_source"]
    caught = np.array(fitted["p_fake_calibrated"])[400:600] >= fitted["threshold"]
    assert set(by_source) == {"gan", "diffusion"} and by_source["gan"] == pytest.approx(caught.mean())


def test_the_cli_csv_and_json_carry_the_verdict(model_dir):
    photo = str(ROOT / "examples" / "real_pixabay_1.jpg")
    command = [sys.executable, "-m", "detector", photo, "--model", str(model_dir)]
    rows = list(csv.DictReader(io.StringIO(subprocess.run([*command, "--csv"], capture_output=True, text=True,
                                                          cwd=ROOT, check=True).stdout)))
    record = json.loads(subprocess.run([*command, "--json"], capture_output=True, text=True, cwd=ROOT, check=True).stdout)[0]
    assert rows[0]["verdict"] in VERDICTS and record["verdict"] == rows[0]["verdict"]
    assert record["faces"] and all(face["verdict"] in VERDICTS for face in record["faces"])
