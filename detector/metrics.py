"""Binary detection metrics (fake = positive class): what evaluation, training and collection scoring report."""
from __future__ import annotations

import numpy as np

UNDEFINED = "undefined"  # how tables show a metric the images cannot give (None here, null in JSON)


def show(value, digits: int = 4) -> str:
    """A metric for a table or a summary line: "undefined" where it is None."""
    return UNDEFINED if value is None else f"{value:.{digits}f}"


def binary_metrics(is_fake: np.ndarray, p_fake: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1, ROC-AUC, average precision, FPR and the confusion matrix [[TN, FP], [FN, TP]].

    A metric these images cannot give is None (null in JSON), never a made-up 0 or a NaN: ROC-AUC and average
    precision need both classes, recall needs fakes, FPR needs reals, precision needs an image called fake, F1 an
    image that is fake or called fake."""
    from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

    is_fake = np.asarray(is_fake).astype(int)
    p_fake = np.asarray(p_fake, dtype=float)
    predicted = (p_fake >= threshold).astype(int)
    both_classes = len(set(is_fake)) == 2
    (tn, fp), (fn, tp) = confusion_matrix(is_fake, predicted, labels=[0, 1])
    share = lambda part, whole: float(part / whole) if whole else None  # noqa: E731
    return {
        "n": int(len(is_fake)),
        "threshold": float(threshold),
        "accuracy": share(tp + tn, len(is_fake)),
        "precision": share(tp, tp + fp),
        "recall": share(tp, tp + fn),
        "f1": share(2 * tp, 2 * tp + fp + fn),
        "roc_auc": float(roc_auc_score(is_fake, p_fake)) if both_classes else None,
        "average_precision": float(average_precision_score(is_fake, p_fake)) if both_classes else None,
        "fpr": share(fp, fp + tn),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }
