"""Detection metrics, calibration and threshold choice, on synthetic scores with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (apply_temperature, binary_metrics, expected_calibration_error, fit_temperature,
                              fit_temperature_and_bias, threshold_for_fpr)


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
