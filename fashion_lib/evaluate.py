"""Metrics over saved test-set predictions: accuracy, macro-F1, per-class F1 (more in the error analysis)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fashion_lib import config


def classification_summary(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class F1 (keyed by class name) of predicted probabilities."""
    from sklearn.metrics import accuracy_score, f1_score

    y_pred = np.asarray(probs).argmax(axis=1)
    labels = list(range(config.NUM_CLASSES))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "test_accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class_f1": {name: float(v) for name, v in zip(config.CLASS_NAMES, per_class, strict=True)},
    }
