"""Metrics over saved test-set predictions: accuracy, macro-F1, per-class F1 (more in the error analysis)."""

from __future__ import annotations

from dataclasses import dataclass
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


# ------------------------------------------------------------------------------- learning-curve diagnosis

OVERFIT_GAP = 0.03  # train − validation accuracy beyond which the model memorises more than it learns
OVERFIT_RISE = 0.05  # validation loss this far (relative) above its best
UNDERFIT_ACCURACY = 0.85  # training accuracy below which the model has not learnt the training set
STILL_FALLING = 0.01  # the last epoch cut validation loss by more than this (relative): not converged yet


@dataclass(frozen=True)
class CurveDiagnosis:
    verdict: str  # "under-fitting", "over-fitting", "good fit" or "not enough epochs"
    best_epoch: int
    epochs: int
    accuracy_gap: float  # final train accuracy − final validation accuracy
    val_loss_rise: float  # final validation loss relative to its best (0.1 = 10 % above)
    still_improving: bool  # the last epoch had the lowest validation loss

    def explanation(self) -> str:
        falling = "still falling" if self.still_improving else "no longer falling"
        numbers = (
            f"best validation loss at epoch {self.best_epoch} of {self.epochs}; "
            f"train − validation accuracy gap {self.accuracy_gap:+.1%}; "
            f"final validation loss {self.val_loss_rise:+.1%} from its best; validation loss {falling}"
        )
        advice = {
            "under-fitting": "train longer or give the model more capacity",
            "over-fitting": "stop earlier, add augmentation or dropout, or use more data",
            "good fit": "training and validation agree",
            "not enough epochs": "train at least two epochs to judge the curves",
        }[self.verdict]
        return f"{self.verdict.capitalize()}: {advice} ({numbers})."


def diagnose_curves(rows: list[dict]) -> CurveDiagnosis:
    """Judge a run's per-epoch metrics (``metrics.jsonl`` rows, in order) from their numbers."""
    rows = [r for r in rows if "val_loss" in r and "accuracy" in r]
    if not rows:
        return CurveDiagnosis("not enough epochs", 0, 0, 0.0, 0.0, False)
    val_loss = np.array([r["val_loss"] for r in rows])
    best = int(np.argmin(val_loss))
    gap = float(rows[-1]["accuracy"] - rows[-1]["val_accuracy"])
    rise = float(val_loss[-1] / val_loss[best] - 1.0)
    last_drop = float(1.0 - val_loss[-1] / val_loss[-2]) if len(rows) >= 2 else 0.0
    still_improving = best == len(rows) - 1 and last_drop > STILL_FALLING
    if len(rows) < 2:
        verdict = "not enough epochs"
    elif rise > OVERFIT_RISE or (gap > OVERFIT_GAP and not still_improving):
        verdict = "over-fitting"
    elif rows[-1]["accuracy"] < UNDERFIT_ACCURACY or still_improving:
        verdict = "under-fitting"
    else:
        verdict = "good fit"
    epoch = int(rows[best].get("epoch", best + 1))
    return CurveDiagnosis(verdict, epoch, len(rows), gap, rise, still_improving)


# ------------------------------------------------------------------------------------- collapse detection

COLLAPSE_SHARE = 0.5  # one class taking at least half of all predictions
CHANCE_MARGIN = 0.05  # accuracy within 5 points of chance (10 %)


@dataclass(frozen=True)
class CollapseReport:
    predicted_counts: np.ndarray  # test images predicted as each class
    top_class: str
    top_share: float
    accuracy: float

    @property
    def collapsed(self) -> bool:
        chance = 1.0 / config.NUM_CLASSES
        return self.top_share >= COLLAPSE_SHARE or self.accuracy <= chance + CHANCE_MARGIN

    def sentence(self) -> str:
        if self.collapsed:
            return (
                f"Collapse: {self.top_share:.0%} of predictions are '{self.top_class}' and accuracy is "
                f"{self.accuracy:.1%} (chance is 10 %)."
            )
        return (
            f"No collapse: the most predicted class, '{self.top_class}', takes {self.top_share:.0%} of "
            f"predictions; accuracy {self.accuracy:.1%}."
        )


def collapse_report(y_true: np.ndarray, probs: np.ndarray) -> CollapseReport:
    """Predicted-class distribution, and whether one class dominates or accuracy is near chance."""
    pred = np.asarray(probs).argmax(axis=1)
    counts = np.bincount(pred, minlength=config.NUM_CLASSES)
    top = int(np.argmax(counts))
    return CollapseReport(
        counts,
        config.CLASS_NAMES[top],
        float(counts[top] / len(pred)),
        float(np.mean(pred == np.asarray(y_true))),
    )
