"""Binary detection metrics (fake = positive class) and their plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from detector.calibration import Calibration
from detector.metrics import UNDEFINED, binary_metrics  # noqa: F401  (their home is detector/: serving reports them too)

NOT_MEASURED = "—"  # how tables show a number a report does not hold (not the same as a metric that is undefined)


def fmt(value, digits: int = 4) -> str:
    """A number for a table. None is a metric the images cannot give (ROC-AUC of one class), which reports store as
    null: "undefined", never a made-up zero. A number a report does not hold at all is the caller's `NOT_MEASURED`."""
    if value is None:
        return UNDEFINED
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value, digits: int = 1) -> str:
    """A share as a percentage for a table; None: "undefined" (as `fmt`)."""
    return UNDEFINED if value is None else f"{100 * value:.{digits}f}%"


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(is_fake: np.ndarray, p_fake: np.ndarray, path: Path, title: str = "ROC") -> None:
    plt = _figure()
    fpr, tpr, _ = roc_curve(is_fake, p_fake)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(is_fake, p_fake):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
    ax.set(xlabel="false-positive rate (real called fake)", ylabel="true-positive rate (fake caught)", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], path: Path, labels=("real", "fake")) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for row in range(2):
        for col in range(2):
            ax.text(col, row, str(matrix[row][col]), ha="center", va="center", fontsize=13)
    ax.set_xticks([0, 1], labels=[f"called {name}" for name in labels])
    ax.set_yticks([0, 1], labels=[f"is {name}" for name in labels])
    ax.set_title("Confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_curves(log: list[dict], path: Path) -> None:
    plt = _figure()
    epochs = [row["epoch"] for row in log]
    fig, (loss_ax, auc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_ax.plot(epochs, [row["train_loss"] for row in log], label="train")
    loss_ax.plot(epochs, [row["val_loss"] for row in log], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    loss_ax.legend()
    auc_ax.plot(epochs, [row["val_roc_auc"] for row in log], label="ROC-AUC")
    auc_ax.plot(epochs, [row["val_accuracy"] for row in log], label="accuracy")
    auc_ax.set(xlabel="epoch", title="Validation", ylim=(0.4, 1.0))
    auc_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- calibration -------------------------------------------------------------------------------


def _logit(p_fake: np.ndarray) -> np.ndarray:
    """log(p_fake / p_real): the two-class softmax's logit difference, recovered from probabilities."""
    p = np.clip(np.asarray(p_fake, dtype=float), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def fit_calibration(is_fake: np.ndarray, p_fake: np.ndarray) -> Calibration:
    """The calibration map (detector/calibration.py) minimising the negative log-likelihood of the labels: beta
    calibration, fake_weight · log p − real_weight · log(1 − p) + bias, both weights kept at 0 or above so that the
    map stays monotonic. It starts from temperature and bias (`fit_temperature_and_bias`, its special case of equal
    weights) and is never worse than it on these scores."""
    from scipy.optimize import minimize

    y = np.asarray(is_fake, dtype=float)
    p = np.clip(np.asarray(p_fake, dtype=float), 1e-7, 1 - 1e-7)
    log_p, log_q = np.log(p), np.log1p(-p)

    def nll(params: np.ndarray) -> float:
        z = params[0] * log_p - params[1] * log_q + params[2]
        return float(np.mean(np.logaddexp(0, z) - y * z))  # −log-likelihood of sigmoid(z), without overflow

    temperature, bias = fit_temperature_and_bias(is_fake, p_fake)
    start = np.array([1 / temperature, 1 / temperature, bias])
    fitted = minimize(nll, start, method="L-BFGS-B", bounds=[(0, 100), (0, 100), (-50, 50)])
    best = fitted.x if fitted.success and nll(fitted.x) <= nll(start) and fitted.x[:2].any() else start
    return Calibration(float(best[0]), float(best[1]), float(best[2]))


def fit_temperature(is_fake: np.ndarray, p_fake: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T) (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar

    z, y = _logit(p_fake), np.asarray(is_fake, dtype=float)

    def nll(log_t: float) -> float:
        q = np.clip(1 / (1 + np.exp(-z / np.exp(log_t))), 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    return float(np.exp(minimize_scalar(nll, bounds=(-4, 4), method="bounded").x))


def fit_temperature_and_bias(is_fake: np.ndarray, p_fake: np.ndarray) -> tuple[float, float]:
    """Temperature and fake-logit bias minimising the negative log-likelihood (Platt scaling on the logit). The bias
    corrects what temperature alone cannot: a model trained on balanced classes (and pseudo-fakes) scored on data
    whose share of fakes differs."""
    from scipy.optimize import minimize

    z, y = _logit(p_fake), np.asarray(is_fake, dtype=float)

    def nll(params: np.ndarray) -> float:
        log_t, bias = params
        q = np.clip(1 / (1 + np.exp(-(z / np.exp(log_t) + bias))), 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    start = np.array([np.log(fit_temperature(is_fake, p_fake)), 0.0])
    log_t, bias = minimize(nll, start, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9}).x
    return float(np.exp(np.clip(log_t, -4, 4))), float(bias)


def threshold_for_fpr(is_fake: np.ndarray, p_fake: np.ndarray, target_fpr: float, sources=None,
                      min_source_reals: int = 0, pooled_cap: float | None = None) -> float:
    """The lowest threshold on p_fake that calls at most `target_fpr` of the real images fake.

    With `sources` (one name per image): at most `target_fpr` on average over the sources of real images, each
    source counting equally, so that a plentiful, easy kind of real photo (video frames, say) cannot hide a rare one
    that the model finds hard (studio portraits). Only sources with at least `min_source_reals` real images take part
    in that mean: one photo of a source of 20 is 5 points of its rate, so a small source would otherwise hold the
    threshold hostage (20 FFHQ photos spent 3.1 of the 4.4 points of the budget). With `pooled_cap`, also at most that
    share of all real images together (small sources included) is flagged.
    """
    is_real = ~np.asarray(is_fake, dtype=bool)
    p = np.asarray(p_fake, dtype=float)
    if sources is None:
        real = np.sort(p[is_real])
        allowed = int(np.floor(target_fpr * len(real)))  # real images that may score at or above the threshold
        if allowed >= len(real):
            return 0.0
        return float(just_above(real[len(real) - allowed - 1], p))
    names = np.asarray(sources).astype(str)[is_real]
    groups = [np.sort(p[is_real][names == name]) for name in sorted(set(names))]
    counted = [g for g in groups if len(g) >= min_source_reals]
    if not counted:
        raise ValueError(f"no source has {min_source_reals} real images or more to hold the threshold's budget")
    # Candidates: 0 and just above each real score; the mean share flagged only falls as the threshold rises.
    candidates = np.concatenate([[0.0], just_above(np.unique(p[is_real]), p)])
    flagged = np.mean([1 - np.searchsorted(g, candidates, side="left") / len(g) for g in counted], axis=0)
    allowed = flagged <= target_fpr + 1e-12
    if pooled_cap is not None:
        everyone = np.sort(p[is_real])
        allowed &= 1 - np.searchsorted(everyone, candidates, side="left") / len(everyone) <= pooled_cap + 1e-12
    return float(candidates[np.argmax(allowed)])


def just_above(values, scores: np.ndarray):
    """A threshold just above each of `values` that keeps every score on the side it was: midway to the next higher
    of `scores` (one step above when none is higher). Midway, not one step: a threshold a rounding error above a
    validation score would move that image across whenever the served model computes it a little differently (float16
    weights, another machine); the images on each side of it are the same either way."""
    ordered = np.unique(np.asarray(scores, dtype=float))
    values = np.asarray(values, dtype=float)
    after = np.searchsorted(ordered, values, side="right")
    higher = ordered[np.minimum(after, len(ordered) - 1)]
    return np.where(after < len(ordered), (values + higher) / 2, np.nextafter(values, 1.0))


def threshold_for_miss(is_fake: np.ndarray, p_fake: np.ndarray, max_missed: float) -> float:
    """The highest threshold on p_fake below which at most `max_missed` of the fake images fall: the lower threshold
    of the three-level verdict (below it, "likely real"), midway between the highest fake allowed below it and the
    score under that one (see `just_above`)."""
    p = np.asarray(p_fake, dtype=float)
    fakes = np.sort(p[np.asarray(is_fake, dtype=bool)])
    if not len(fakes):
        raise ValueError("a lower threshold needs fake images to fit on")
    fake = fakes[min(len(fakes) - 1, int(np.floor(max_missed * len(fakes))))]
    lower = np.unique(p[p < fake])
    return float((fake + lower[-1]) / 2) if len(lower) else float(fake)


def fpr_per_source(is_fake: np.ndarray, p_fake: np.ndarray, sources, threshold: float) -> dict[str, float]:
    """Share of each source's real images at or above `threshold`."""
    is_real = ~np.asarray(is_fake, dtype=bool)
    p, names = np.asarray(p_fake, dtype=float)[is_real], np.asarray(sources).astype(str)[is_real]
    return {str(name): float(np.mean(p[names == name] >= threshold)) for name in sorted(set(names))}


def expected_calibration_error(is_fake: np.ndarray, p_fake: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width bins of p_fake: mean |fraction fake − mean p_fake|, weighted by bin size."""
    y, p = np.asarray(is_fake, dtype=float), np.asarray(p_fake, dtype=float)
    index = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(y[index == b].mean() - p[index == b].mean()) * (index == b).mean()
                     for b in range(bins) if (index == b).any()))


def plot_reliability(is_fake: np.ndarray, curves: dict[str, np.ndarray], path: Path, bins: int = 10) -> None:
    """Reliability diagram: observed fraction of fakes against predicted p_fake, one line per curve."""
    plt = _figure()
    y = np.asarray(is_fake, dtype=float)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfectly calibrated")
    for name, p in curves.items():
        index = np.minimum((np.asarray(p) * bins).astype(int), bins - 1)
        used = [b for b in range(bins) if (index == b).any()]
        ax.plot([np.mean(p[index == b]) for b in used], [y[index == b].mean() for b in used], "o-",
                label=f"{name} (ECE {expected_calibration_error(y, p, bins):.3f})")
    ax.set(xlabel="predicted p(fake)", ylabel="observed fraction fake", title="Reliability", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_robustness(rows: dict[str, float], path: Path) -> None:
    """ROC-AUC per perturbation as horizontal bars."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(rows) + 1))
    names = list(rows)
    ax.barh(names, [rows[name] for name in names], color="tab:blue")
    for i, name in enumerate(names):
        ax.text(rows[name] + 0.005, i, f"{rows[name]:.3f}", va="center", fontsize=8)
    ax.set(xlabel="ROC-AUC", xlim=(0.4, 1.05), title="Robustness")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
