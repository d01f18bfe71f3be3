"""The three-level verdict, the same in every output for a photo (library, CLI, API, page, batch, report).

p(fake) at or above the model's threshold → likely fake; below its lower threshold → likely real; between them →
uncertain. Both thresholds are fitted at calibration time (`training.evaluate --calibrate`) and stored in
config.json; the `label` (real/fake) of the JSON outputs stays as it was, for programs that read it.
`threshold_rule` says what they are, read from config.json's `calibration`: the README (training.summary), the page
and the report print its sentences, so the rule and what was measured are written in one place.
A video gets no verdict (detector/video.py).
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


def _per100(share: float) -> str:
    """A share as "n in 100": one decimal below 10 (1.6), whole above (22)."""
    value = share * 100
    return f"{value:.1f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"


def threshold_rule(calibration: dict | None, digits: int = 0) -> str:
    """The verdict's thresholds as the rules that set them, read from a config.json `calibration` (as
    training.evaluate --calibrate fitted it and training.publish stored it), each with what was measured beside it.
    `digits`: decimals of the percents the thresholds are written with (the page matches the score shown beside it).

    Validation numbers are called that: the same validation photos chose the threshold, the calibration, the
    training epoch and the model, so they are no independent test."""
    calibration = calibration or {}
    threshold = calibration.get("threshold")
    if threshold is None:
        return "It flags an image when p(fake) is above 50% (this model has no calibrated threshold)."
    shown = lambda value: f"{value * 100:.{digits}f}%"
    text = f"It flags an image (\"likely fake\") when p(fake) ≥ {shown(threshold)}."
    target = calibration.get("target_fpr")
    if target is None:
        text += " The threshold is stored with the model without the rule that set it."
    elif calibration.get("target_fpr_per_source"):
        smallest = calibration.get("min_source_reals") or 0
        cap = calibration.get("pooled_fpr_cap")
        text += (f" The rule that set it: the lowest threshold at which at most {_per100(target)} in 100 real photos "
                 "are flagged on average over the kinds of real photo in the validation split"
                 + (f" with at least {smallest} photos" if smallest > 1 else "") + ", each kind counting equally"
                 + (f", and at most {_per100(cap)} in 100 of all its real photos together" if cap is not None else "")
                 + ".")
    else:
        text += (f" The rule that set it: the lowest threshold at which at most {_per100(target)} in 100 of the "
                 "validation split's real photos are flagged.")
    measured = []
    if calibration.get("fpr_all_reals") is not None:
        measured.append(f"{_per100(calibration['fpr_all_reals'])} in 100 of all its real photos flagged")
    if calibration.get("fakes_caught") is not None:
        measured.append(f"{_per100(calibration['fakes_caught'])} in 100 of its fakes caught (a picture that is not "
                        "flagged can still be fake)")
    if measured:
        text += (" Measured on that validation split, which also chose the threshold, the calibration, the "
                 f"training epoch and the model (so no independent test): {' and '.join(measured)}.")
    lower = calibration.get("lower_threshold", min(DEFAULT_LOWER_THRESHOLD, threshold))
    miss = calibration.get("target_fake_miss")
    how = "" if miss is None else f" (the rule: at most {_per100(miss)} in 100 validation fakes score that low)"
    return text + f" Below {shown(lower)} it reads \"likely real\"{how}; between the two, \"uncertain\"."
