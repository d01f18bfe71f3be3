"""The calibration map: from the model's two class probabilities to a calibrated p(fake).

    calibrated log-odds of fake = fake_weight · log P(fake) − real_weight · log P(real) + bias

This is beta calibration (Kull, Silva Filho and Flach, 2017) on the model's output. With both weights equal to
1 / T it is temperature scaling with a bias on the fake logit (Platt scaling of the logit), the form older model
folders store as {"temperature", "bias"}; unequal weights bend the map where a network's scores crowd one side.
Both weights are at least 0, so the map never reverses an order: a threshold keeps the same images on each side.

One home for the map: the detector applies it to logits (`probabilities`), training fits it on validation scores
and applies it to stored ones (`p_fake`), and both read and write the config block through `from_config` and
`to_config`. Fitted by `training.evaluate --calibrate` (`training.metrics.fit_calibration`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

WEIGHTS_KEY = "log_prob_weights"  # {"fake": a, "real": b} in the config's calibration block
# The calibration block's "scores": what the map was fitted on. "raw": the model's own p(fake), the only input the
# detector ever gives the map (training.evaluate --calibrate scores with no stored map; training.publish checks it).
RAW_SCORES = "raw"


@dataclass(frozen=True)
class Calibration:
    fake_weight: float = 1.0
    real_weight: float = 1.0
    bias: float = 0.0

    @classmethod
    def from_config(cls, block: dict | None) -> "Calibration":
        """The map a config's calibration block names (validated by detector.model.read_config); none: identity."""
        block = block or {}
        bias = float(block.get("bias", 0.0))
        if WEIGHTS_KEY in block:
            return cls(float(block[WEIGHTS_KEY]["fake"]), float(block[WEIGHTS_KEY]["real"]), bias)
        inverse = 1.0 / float(block.get("temperature", 1.0))
        return cls(inverse, inverse, bias)

    def to_config(self) -> dict:
        """{"temperature", "bias"} when both weights are equal (readable by every version), else the weights."""
        if math.isclose(self.fake_weight, self.real_weight, rel_tol=1e-12) and self.fake_weight > 0:
            return {"temperature": 1.0 / self.fake_weight, "bias": self.bias}
        return {WEIGHTS_KEY: {"fake": self.fake_weight, "real": self.real_weight}, "bias": self.bias}

    @property
    def is_identity(self) -> bool:
        return self.fake_weight == 1.0 and self.real_weight == 1.0 and self.bias == 0.0

    def log_odds(self, log_p_fake, log_p_real):
        return self.fake_weight * log_p_fake - self.real_weight * log_p_real + self.bias

    def probabilities(self, logits: torch.Tensor, fake: int) -> torch.Tensor:
        """Calibrated probabilities [N, 2] from two-class logits [N, 2]; `fake` is the fake class's index."""
        if self.is_identity:
            return logits.softmax(dim=1)
        log_p = logits.float().log_softmax(dim=1)
        p_fake = torch.sigmoid(self.log_odds(log_p[:, fake], log_p[:, 1 - fake]))
        columns = [None, None]
        columns[fake], columns[1 - fake] = p_fake, 1 - p_fake
        return torch.stack(columns, dim=1)

    def p_fake(self, p_fake: np.ndarray) -> np.ndarray:
        """Calibrated p(fake) from the model's own p(fake) (scores stored by evaluation)."""
        p = np.clip(np.asarray(p_fake, dtype=float), 1e-12, 1 - 1e-12)
        return 1 / (1 + np.exp(-self.log_odds(np.log(p), np.log1p(-p))))
