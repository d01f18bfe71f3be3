"""Binary detection metrics (fake = positive class) and their plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve


def binary_metrics(is_fake: np.ndarray, p_fake: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1, ROC-AUC, FPR and the confusion matrix [[TN, FP], [FN, TP]]."""
    is_fake = np.asarray(is_fake).astype(int)
    p_fake = np.asarray(p_fake, dtype=float)
    predicted = (p_fake >= threshold).astype(int)
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
        "roc_auc": float(roc_auc_score(is_fake, p_fake)) if len(set(is_fake)) == 2 else float("nan"),
        "fpr": float(fp / (fp + tn)) if fp + tn else 0.0,
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


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
