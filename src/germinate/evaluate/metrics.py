"""Classification metrics as pure functions of labels and predictions (scikit-learn underneath)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


def cross_entropy(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Per-sample negative log-likelihood of the true class."""
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], eps, 1.0))


def summary(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, micro-F1 (equal to accuracy for single-label data, Kaggle's score) and macro-F1."""
    every = list(range(n_classes))
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "f1_micro": float(f1_score(labels, preds, average="micro", labels=every, zero_division=0)),
        "f1_macro": float(f1_score(labels, preds, average="macro", labels=every, zero_division=0)),
    }


def per_class(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class."""
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=list(range(len(classes))), zero_division=0)
    return {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])} for i, c in enumerate(classes)}


def confusion(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts: row = actual class, column = predicted class."""
    return confusion_matrix(labels, preds, labels=list(range(n_classes)))


def most_confused(cm: np.ndarray, classes: list[str], k: int = 5) -> list[tuple[str, str, int]]:
    """The k largest off-diagonal counts as (actual, predicted, count), largest first."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    pairs = [np.unravel_index(i, off.shape) for i in order]
    return [(classes[a], classes[p], int(off[a, p])) for a, p in pairs if off[a, p] > 0]


def full_report(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Everything `germinate evaluate` reports, as plain values (JSON-ready)."""
    preds = probs.argmax(1)
    cm = confusion(labels, preds, len(classes))
    return {
        **summary(labels, preds, len(classes)),
        "loss": float(cross_entropy(probs, labels).mean()),
        "n": len(labels),
        "per_class": per_class(labels, preds, classes),
        "confusion": cm.tolist(),
        "most_confused": [list(t) for t in most_confused(cm, classes)],
    }
