"""Binary detection metrics (fake = positive class): what evaluation, training and collection scoring report."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score


def binary_metrics(is_fake: np.ndarray, p_fake: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1, ROC-AUC, average precision, FPR and the confusion matrix [[TN, FP], [FN, TP]]."""
    is_fake = np.asarray(is_fake).astype(int)
    p_fake = np.asarray(p_fake, dtype=float)
    predicted = (p_fake >= threshold).astype(int)
    both_classes = len(set(is_fake)) == 2  # AUC and AP are undefined otherwise
    (tn, fp), (fn, tp) = confusion_matrix(is_fake, predicted, labels=[0, 1])
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "n": int(len(is_fake)),
        "threshold": float(threshold),
        "accuracy": float((tp + tn) / len(is_fake)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
        "roc_auc": float(roc_auc_score(is_fake, p_fake)) if both_classes else float("nan"),
        "average_precision": float(average_precision_score(is_fake, p_fake)) if both_classes else float("nan"),
        "fpr": float(fp / (fp + tn)) if fp + tn else 0.0,
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }
