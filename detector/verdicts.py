"""The three-level verdict, the same in every output (library, CLI, API, page, batch, video, report).

p(fake) at or above the model's threshold → likely fake; below its lower threshold → likely real; between them →
uncertain. Both thresholds are fitted at calibration time (`training.evaluate --calibrate`) and stored in
config.json; the `label` (real/fake) of the JSON outputs stays as it was, for programs that read it.
"""
from __future__ import annotations

LIKELY_REAL, UNCERTAIN, LIKELY_FAKE = "likely real", "uncertain", "likely fake"
VERDICTS = (LIKELY_REAL, UNCERTAIN, LIKELY_FAKE)
DEFAULT_LOWER_THRESHOLD = 0.5  # models calibrated before the lower threshold was fitted: below 50% is likely real
VERDICT_COLOURS = {LIKELY_FAKE: (220, 38, 38), UNCERTAIN: (217, 119, 6), LIKELY_REAL: (22, 163, 74)}  # red, amber, green


def verdict_of(p_fake: float, lower: float, upper: float) -> str:
    """Likely fake at or above `upper`, likely real below `lower`, uncertain between."""
    if p_fake >= upper:
        return LIKELY_FAKE
    return LIKELY_REAL if p_fake < lower else UNCERTAIN
