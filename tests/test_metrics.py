"""Detection metrics, calibration and threshold choice, on synthetic scores with known answers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from detector.calibration import Calibration
from training.metrics import (binary_metrics, expected_calibration_error, fit_calibration, fit_temperature,
                              fit_temperature_and_bias, fmt, fpr_per_source, threshold_for_fpr)


def apply_temperature(p_fake, temperature, bias=0.0):
    return Calibration(1 / temperature, 1 / temperature, bias).p_fake(p_fake)


@pytest.fixture
def overconfident():
    """Scores whose logits are 3× too large: temperature scaling must shrink them."""
    rng = np.random.default_rng(0)
    logit = rng.normal(0, 2, 4000)
    is_fake = rng.random(len(logit)) < 1 / (1 + np.exp(-logit))  # sigmoid(logit) is calibrated by construction
    return is_fake, 1 / (1 + np.exp(-3 * logit))


def test_binary_metrics_on_a_known_confusion_matrix():
    is_fake = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p_fake = np.array([0.1, 0.2, 0.6, 0.3, 0.9, 0.8, 0.4, 0.7])
    m = binary_metrics(is_fake, p_fake)
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]
    assert (m["accuracy"], m["precision"], m["recall"], m["fpr"]) == (0.75, 0.75, 0.75, 0.25)
    assert m["roc_auc"] == pytest.approx(15 / 16)  # 15 of the 16 (fake, real) pairs are ordered right


def test_temperature_scaling_recovers_the_true_temperature_and_lowers_ece(overconfident):
    is_fake, p_fake = overconfident
    temperature = fit_temperature(is_fake, p_fake)
    assert temperature == pytest.approx(3.0, rel=0.1)
    calibrated = apply_temperature(p_fake, temperature)
    assert expected_calibration_error(is_fake, calibrated) < 0.03 < expected_calibration_error(is_fake, p_fake)
    assert binary_metrics(is_fake, calibrated)["roc_auc"] == pytest.approx(binary_metrics(is_fake, p_fake)["roc_auc"])


@pytest.mark.parametrize("target", [0.01, 0.05, 0.2])
def test_threshold_flags_at_most_the_target_share_of_real_images(overconfident, target):
    is_fake, p_fake = overconfident
    threshold = threshold_for_fpr(is_fake, p_fake, target)
    fpr = binary_metrics(is_fake, p_fake, threshold)["fpr"]
    assert target - 0.002 <= fpr <= target  # as many as allowed, never more


def test_a_threshold_per_source_keeps_a_rare_hard_kind_of_real_photo_from_hiding_behind_many_easy_ones():
    """900 easy reals and 100 hard ones (scoring like fakes): 5% of all reals flagged is half of the hard kind; 5% on
    average over the two kinds flags at most 10% of the hard one, and the threshold is the lowest that does."""
    rng = np.random.default_rng(0)
    p_fake = np.r_[rng.uniform(0, 0.5, 900), rng.uniform(0.3, 0.9, 100), rng.uniform(0.5, 1, 500)]
    is_fake = np.r_[np.zeros(1000), np.ones(500)].astype(bool)
    sources = ["video frames"] * 900 + ["studio"] * 100 + ["generator"] * 500
    pooled = threshold_for_fpr(is_fake, p_fake, 0.05)
    assert fpr_per_source(is_fake, p_fake, sources, pooled)["studio"] == pytest.approx(0.5, abs=0.01)
    balanced = threshold_for_fpr(is_fake, p_fake, 0.05, sources)
    rates = fpr_per_source(is_fake, p_fake, sources, balanced)
    assert set(rates) == {"video frames", "studio"} and np.mean(list(rates.values())) <= 0.05
    assert rates["studio"] == pytest.approx(0.1, abs=0.011)
    just_below = np.nextafter(np.max(p_fake[~is_fake][p_fake[~is_fake] < balanced]), 1.0) - 1e-9
    assert np.mean(list(fpr_per_source(is_fake, p_fake, sources, just_below).values())) > 0.05
    # one source of reals: the same threshold as the pooled rule
    assert threshold_for_fpr(is_fake, p_fake, 0.05, ["one"] * 1500) == pooled


def test_bias_corrects_a_shifted_prior_that_temperature_cannot():
    """Scores 2× too confident and shifted by +1 in logit (a model trained on balanced classes, tested where fakes
    are rarer): temperature and bias recover both, and the ECE falls below what temperature alone reaches."""
    rng = np.random.default_rng(1)
    logit = rng.normal(-0.5, 1.5, 6000)
    is_fake = rng.random(len(logit)) < 1 / (1 + np.exp(-logit))
    p_fake = 1 / (1 + np.exp(-(2 * logit + 1)))  # true logit = (model logit - 1) / 2
    temperature, bias = fit_temperature_and_bias(is_fake, p_fake)
    assert temperature == pytest.approx(2.0, rel=0.1) and bias == pytest.approx(-0.5, abs=0.1)
    both = expected_calibration_error(is_fake, apply_temperature(p_fake, temperature, bias))
    alone = expected_calibration_error(is_fake, apply_temperature(p_fake, fit_temperature(is_fake, p_fake)))
    assert both < 0.02 < alone


def test_beta_calibration_fits_scores_that_temperature_and_bias_cannot():
    """Scores squeezed towards the middle on the fake side only (log p and log(1 − p) weighted apart, as a network's
    scores crowd one side): beta calibration recovers the map, below 0.015 ECE where temperature and bias stay above
    0.025; it keeps every image's order (monotone: the same ROC-AUC), and on scores temperature and bias explain fully,
    it is that (equal weights) and written as {"temperature", "bias"}."""
    rng = np.random.default_rng(2)
    p_model = 1 / (1 + np.exp(-rng.normal(0, 2.5, 8000)))
    true = Calibration(fake_weight=2.5, real_weight=0.6, bias=0.3)
    is_fake = rng.random(len(p_model)) < true.p_fake(p_model)
    fitted = fit_calibration(is_fake, p_model)
    assert fitted.fake_weight == pytest.approx(2.5, rel=0.15) and fitted.real_weight == pytest.approx(0.6, rel=0.2)
    beta = expected_calibration_error(is_fake, fitted.p_fake(p_model))
    temperature, bias = fit_temperature_and_bias(is_fake, p_model)
    platt = expected_calibration_error(is_fake, apply_temperature(p_model, temperature, bias))
    assert beta < 0.015 < 0.025 < platt
    order = np.argsort(p_model)
    assert np.all(np.diff(fitted.p_fake(p_model)[order]) >= 0)
    assert set(fitted.to_config()) == {"log_prob_weights", "bias"}
    assert Calibration.from_config(fitted.to_config()) == fitted

    logit = rng.normal(0, 2, 8000)  # calibrated once divided by 3: temperature 3, no bias
    is_fake = rng.random(len(logit)) < 1 / (1 + np.exp(-logit))
    fitted = fit_calibration(is_fake, 1 / (1 + np.exp(-3 * logit)))
    assert fitted.fake_weight == pytest.approx(fitted.real_weight, rel=0.1) == pytest.approx(1 / 3, rel=0.1)
    assert Calibration.from_config({"temperature": 3.0, "bias": 0.5}) == Calibration(1 / 3, 1 / 3, 0.5)
    assert Calibration(0.5, 0.5, 0.2).to_config() == {"temperature": 2.0, "bias": 0.2}


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_metric_one_class_cannot_give_is_null_not_zero_or_nan():
    reals = binary_metrics(np.array([0, 0, 0]), np.array([0.1, 0.6, 0.3]))
    assert reals["roc_auc"] is None and reals["average_precision"] is None and reals["recall"] is None
    assert reals["fpr"] == pytest.approx(1 / 3) and reals["precision"] == 0.0  # one real called fake: none right
    fakes = binary_metrics(np.array([1, 1]), np.array([0.7, 0.2]))
    assert fakes["fpr"] is None and fakes["recall"] == 0.5 and fakes["roc_auc"] is None
    assert binary_metrics(np.array([0, 0]), np.array([0.1, 0.2]))["precision"] is None  # nothing called fake
    assert strict_json(json.dumps(reals))["roc_auc"] is None


def test_tables_say_undefined_where_a_metric_is_undefined():
    from training.metrics import pct

    assert fmt(None) == "undefined" and pct(None) == "undefined"
    assert fmt(0.81234, 3) == "0.812" and pct(0.05) == "5.0%"


def test_the_cards_per_source_table_says_undefined_for_a_source_of_one_class():
    """A source of real photos only, as training.evaluate reports it (null where its classes cannot give a metric)."""
    from training.publish import source_rows

    (row,) = source_rows({"utkface_adults": {"n": 3, "n_real": 3, "n_fake": 0, "accuracy": 1.0, "roc_auc": None,
                                             "average_precision": None, "fpr": 0.0, "recall": None}})
    assert row == ["`utkface_adults`", "3", "3", "0", "1.0000", "undefined", "undefined", "0.0000", "undefined"]


def test_a_small_source_cannot_hold_the_threshold_hostage_and_the_pooled_cap_holds():
    """Two kinds of real photo of 100 and a small one of 10 that scores high: counted in the mean, each of its photos is
    10 points of its rate and drags the threshold up; below `min_source_reals` only the pooled cap sees it."""
    rng = np.random.default_rng(0)
    big_a, big_b, small = rng.uniform(0, 0.5, 100), rng.uniform(0, 0.5, 100), rng.uniform(0.6, 0.9, 10)
    fakes = rng.uniform(0.3, 1.0, 100)
    p = np.concatenate([big_a, big_b, small, fakes])
    is_fake = np.r_[np.zeros(210), np.ones(100)].astype(bool)
    sources = ["a"] * 100 + ["b"] * 100 + ["small"] * 10 + ["fake"] * 100
    hostage = threshold_for_fpr(is_fake, p, 0.05, sources)
    assert hostage > small.min()  # the small source, flagged at most 15% of its 10, needed the threshold above most of it
    fair = threshold_for_fpr(is_fake, p, 0.05, sources, min_source_reals=50)
    assert fair < hostage and np.mean(fakes >= fair) > np.mean(fakes >= hostage)
    reals = p[~is_fake]
    assert (np.mean(big_a >= fair) + np.mean(big_b >= fair)) / 2 <= 0.05
    capped = threshold_for_fpr(is_fake, p, 0.05, sources, min_source_reals=50, pooled_cap=0.03)
    assert np.mean(reals >= capped) <= 0.03 < np.mean(reals >= fair)  # the cap binds: more than 3% were flagged before
    with pytest.raises(ValueError, match="no source has 500 real images"):
        threshold_for_fpr(is_fake, p, 0.05, sources, min_source_reals=500)
