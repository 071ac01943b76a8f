"""Metrics over saved test-set predictions: accuracy, macro-F1, per-class F1 (more in the error analysis)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fashion_lib import config, files, wording


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

LARGE_GAP = 0.10  # train − validation accuracy this large is over-fitting whatever the trend
OVERFIT_GAP = 0.05  # … and this large, once validation loss has stopped falling
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
    still_improving: bool  # the last epoch had the lowest validation loss, and cut it by > STILL_FALLING
    last_drop: float = 0.0  # how much the last epoch cut validation loss (relative; negative: it rose)

    def explanation(self) -> str:
        gap = f"train − validation accuracy gap {100 * self.accuracy_gap:+.1f} points"
        if self.epochs == 0:
            return f"{self.verdict.capitalize()}: no epoch with a validation loss yet."
        if self.epochs < 2:
            numbers = f"one epoch, so no trend yet; {gap}"
        else:
            if self.still_improving:
                trend = "still falling"
            elif self.val_loss_rise <= 0:  # the last epoch is the best, by a hair
                cut = wording.percent(self.last_drop, 1) if self.last_drop >= 0.0005 else "less than 0.1 %"
                trend = f"levelling off (the last epoch cut it by {cut})"
            else:
                trend = "no longer falling"
            final = (
                "the final validation loss is its best"
                if self.val_loss_rise <= 0
                else f"final validation loss {wording.percent(self.val_loss_rise, 1)} above its best"
            )
            numbers = (
                f"best validation loss at epoch {self.best_epoch} of {self.epochs}; {gap}; "
                f"{final}; validation loss {trend}"
            )
        advice = {
            "under-fitting": "train longer or give the model more capacity",
            "over-fitting": "the model fits its training images better than new ones — stop earlier, add "
            "augmentation or dropout, or use more data",
            "good fit": "training and validation agree",
            "not enough epochs": "train at least two epochs to judge the curves",
        }[self.verdict]
        return f"{self.verdict.capitalize()}: {advice} ({numbers})."


def diagnose_curves(rows: list[dict]) -> CurveDiagnosis:
    """Judge a run's per-epoch metrics (``metrics.jsonl`` rows, in order) from their numbers. An epoch a
    stop cut short (``partial``) is left out: a tenth of an epoch's loss said "still falling"."""
    rows = [
        r
        for r in rows
        if r.get("val_loss") is not None and r.get("accuracy") is not None and not r.get("partial")
    ]
    if not rows:
        return CurveDiagnosis("not enough epochs", 0, 0, 0.0, 0.0, False)
    val_loss = np.array([r["val_loss"] for r in rows])
    best = len(val_loss) - 1 - int(np.argmin(val_loss[::-1]))  # the last of equal lows
    gap = float(rows[-1]["accuracy"] - rows[-1]["val_accuracy"])
    rise = float(val_loss[-1] / val_loss[best] - 1.0)
    last_drop = float(1.0 - val_loss[-1] / val_loss[-2]) if len(rows) >= 2 else 0.0
    still_improving = best == len(rows) - 1 and last_drop > STILL_FALLING
    if len(rows) < 2:
        verdict = "not enough epochs"
    elif gap > LARGE_GAP or rise > OVERFIT_RISE or (gap > OVERFIT_GAP and not still_improving):
        verdict = "over-fitting"
    elif rows[-1]["accuracy"] < UNDERFIT_ACCURACY or still_improving:
        verdict = "under-fitting"
    else:
        verdict = "good fit"
    epoch = int(rows[best].get("epoch", best + 1))
    return CurveDiagnosis(verdict, epoch, len(rows), gap, rise, still_improving, last_drop)


# ------------------------------------------------------------------------------------- collapse detection

COLLAPSE_SHARE = 0.5  # one class taking at least half of all predictions
CHANCE_MARGIN = 0.05  # accuracy within 5 points of chance (10 %)


# what a collapse can come from: the original prototype's was inputs squeezed before its backbone, but a
# run of one epoch on 1,000 images collapses too, and was told it bore "the signature of the prototype"
COLLAPSE_CAUSES = (
    "The usual causes: too little training (an epoch or two on a few images), a learning rate far too high, "
    "or inputs squeezed before a backbone that scales them itself (the original prototype's ÷ 255, about "
    "10 % accuracy)."
)


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
                f"Collapse: {wording.percent(self.top_share, 1)} of predictions are '{self.top_class}' and "
                f"accuracy is {wording.percent(self.accuracy)} (chance is 10 %)."
            )
        return (
            f"No collapse: the most predicted class, '{self.top_class}', takes "
            f"{wording.percent(self.top_share, 1)} of predictions; accuracy {wording.percent(self.accuracy)}."
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


# ----------------------------------------------------------------------------------------- error analysis


@dataclass(frozen=True)
class Predictions:
    """A run's saved test-set predictions: probabilities (N, 10), true labels and test-set indices."""

    probabilities: np.ndarray
    labels: np.ndarray
    test_index: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    @property
    def wrong(self) -> np.ndarray:
        return self.predicted != self.labels


def load_predictions(folder) -> Predictions:
    """The predictions a run (or shipped model) saved; nothing is recomputed.

    Raises ValueError naming what is wrong when the file is unreadable or its arrays do not fit together
    (probabilities (N, 10) in [0, 1], N labels 0–9, N test-set indices 0–9,999)."""
    saved = files.read_arrays(folder / "predictions.npz")
    missing = {"probabilities", "labels"} - saved.keys()
    if missing:
        raise ValueError(f"predictions.npz has no {' or '.join(sorted(missing))}")
    probabilities, labels = saved["probabilities"], saved["labels"]
    index = saved.get("test_index", np.arange(labels.size))
    for name, array, kinds, what in (
        ("probabilities", probabilities, "fiu", "numbers"),
        ("labels", labels, "iu", "whole numbers"),
        ("test_index", index, "iu", "whole numbers"),
    ):
        if array.dtype.kind not in kinds:
            raise ValueError(f"predictions.npz: {name} are not {what}")
    probabilities = probabilities.astype(np.float64)
    n = len(labels) if labels.ndim == 1 else -1
    if probabilities.shape != (n, config.NUM_CLASSES) or index.shape != (n,) or n <= 0:
        raise ValueError(
            f"predictions.npz does not fit together: probabilities {probabilities.shape}, "
            f"labels {labels.shape}, test_index {index.shape}"
        )
    if not (np.isfinite(probabilities).all() and probabilities.min() >= 0 and probabilities.max() <= 1):
        raise ValueError("predictions.npz: probabilities outside [0, 1]")
    if labels.min() < 0 or labels.max() >= config.NUM_CLASSES or index.min() < 0 or index.max() >= 10000:
        raise ValueError("predictions.npz: labels or test indices out of range")
    return Predictions(probabilities, labels.astype(int), index.astype(int))


def confusion_counts(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(10, 10) counts: row = true class, column = predicted class."""
    cm = np.zeros((config.NUM_CLASSES, config.NUM_CLASSES), dtype=int)
    np.add.at(cm, (np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)), 1)
    return cm


def normalize_rows(cm: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the share of each true class predicted as each class)."""
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)


def cell_positions(p: Predictions, true_class: int, predicted_class: int) -> np.ndarray:
    """Positions (into the saved arrays) of the test images in one confusion-matrix cell."""
    return np.flatnonzero((p.labels == true_class) & (p.predicted == predicted_class))


def top_k(probabilities: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(classes, probabilities) of the k most probable classes of each row, most probable first."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(probabilities, order, axis=1)


GALLERY_ORDERS = ("most confident first", "least confident first")


SUSPECT_MARK = "⚠"  # in a gallery caption: a possible label error (the page says so above the gallery)


def gallery(
    p: Predictions,
    positions: np.ndarray,
    order: str = GALLERY_ORDERS[0],
    limit: int = 60,
    suspects=frozenset(),
) -> tuple[np.ndarray, list[str]]:
    """Which of ``positions`` a gallery shows (ordered by confidence, at most ``limit``) and a caption for
    each: test index, true class, ``SUSPECT_MARK`` for a possible label error, and the top-2 classes with
    their probabilities (the first is the confidence)."""
    if order not in GALLERY_ORDERS:
        raise ValueError(f"order must be one of {', '.join(GALLERY_ORDERS)}")
    positions = np.asarray(positions, dtype=int)
    conf = p.confidence[positions]
    ranked = positions[np.argsort(-conf if order == GALLERY_ORDERS[0] else conf, kind="stable")]
    shown = ranked[:limit]
    classes, probs = top_k(p.probabilities[shown], 2)
    captions = []
    for pos, cls, pr in zip(shown, classes, probs, strict=True):
        # the % kept with its number: six captions a row wrapped "0.5" and "%" onto two lines
        top = ", ".join(
            f"{config.CLASS_NAMES[c]} {wording.confidence(v)}".replace(" %", "\u00a0%")
            for c, v in zip(cls, pr, strict=True)
        )
        mark = f" {SUSPECT_MARK}" if pos in suspects else ""
        captions.append(f"#{p.test_index[pos]} · true {config.CLASS_NAMES[p.labels[pos]]}{mark} · {top}")
    return shown, captions


def per_class_report(labels: np.ndarray, predicted: np.ndarray):
    """Precision, recall, F1 and support per class, then the macro and weighted averages."""
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

    classes = list(range(config.NUM_CLASSES))
    p, r, f, s = precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    rows = [
        {"class": name, "precision": p[i], "recall": r[i], "F1": f[i], "support": int(s[i])}
        for i, name in enumerate(config.CLASS_NAMES)
    ]
    for average in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(
            labels, predicted, labels=classes, average=average, zero_division=0
        )
        rows.append(
            {"class": f"{average} average", "precision": ap, "recall": ar, "F1": af, "support": int(s.sum())}
        )
    return pd.DataFrame(rows)


def most_confused_pairs(cm: np.ndarray, top: int = 5):
    """The off-diagonal cells with the most errors, with their share of all errors."""
    import pandas as pd

    off = cm.copy()
    np.fill_diagonal(off, 0)
    total = off.sum()
    flat = np.argsort(-off, axis=None, kind="stable")[:top]
    rows = []
    for true_c, pred_c in zip(*np.unravel_index(flat, off.shape), strict=True):
        if off[true_c, pred_c] == 0:
            break
        rows.append(
            {
                "true": config.CLASS_NAMES[true_c],
                "predicted": config.CLASS_NAMES[pred_c],
                "errors": int(off[true_c, pred_c]),
                "share of all errors": off[true_c, pred_c] / total,
            }
        )
    return pd.DataFrame(rows, columns=["true", "predicted", "errors", "share of all errors"])


@dataclass(frozen=True)
class PairErrors:
    a_as_b: int
    b_as_a: int
    all_errors: int

    @property
    def share(self) -> float:
        return (self.a_as_b + self.b_as_a) / self.all_errors if self.all_errors else 0.0


def pair_errors(cm: np.ndarray, a: int, b: int) -> PairErrors:
    """Errors between two classes in both directions, and their share of all errors."""
    return PairErrors(int(cm[a, b]), int(cm[b, a]), int(cm.sum() - np.trace(cm)))


def confused_pairs(cm: np.ndarray) -> list[tuple[int, int, int]]:
    """Every pair of classes (a < b) with its errors in both directions, most first (ties in class
    order); pairs with none left out."""
    both = cm + cm.T
    pairs = [(a, b, int(both[a, b])) for a in range(len(cm)) for b in range(a + 1, len(cm)) if both[a, b]]
    return sorted(pairs, key=lambda pair: -pair[2])


def pair_standing(cm: np.ndarray, a: int, b: int) -> str:
    """Where the pair a/b stands among all pairs of classes, both directions counted, and how many errors
    each of them is in: the design singled out Shirt/Pullover, which for the shipped models is the third
    pair, after Shirt/T-shirt and Coat/Shirt (an instructor's audit found nothing said so)."""
    names, total = config.CLASS_NAMES, int(cm.sum() - np.trace(cm))
    if total == 0:
        return "No errors at all."
    pairs = confused_pairs(cm)
    n_pairs = len(cm) * (len(cm) - 1) // 2
    rank = next((k for k, (x, y, _) in enumerate(pairs) if {x, y} == {a, b}), None)
    title = f"{names[a]} ↔ {names[b]}"
    if rank is None:
        where = f"Counting both directions, {title} is confused in no test image."
    elif rank == 0:
        where = f"Counting both directions, {title} is the most confused of the {n_pairs} class pairs."
    else:
        ahead = ", ".join(
            f"{names[x]} ↔ {names[y]} ({n:,}, {wording.percent(n / total, 1)})" for x, y, n in pairs[:rank]
        )
        where = (
            f"Counting both directions, {title} is number {rank + 1} of the {n_pairs} class pairs; ahead of "
            f"it: {ahead}."
        )
    shares = []
    for c in (a, b):
        involved = int(cm[c].sum() + cm[:, c].sum() - 2 * cm[c, c])
        shares.append(f"{names[c]} in {involved:,} ({wording.percent(involved / total, 1)})")
    return f"{where} Of all {total:,} errors, as the true or the predicted class: {' and '.join(shares)}."


# ------------------------------------------------------------------------------------------- calibration


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10):
    """Equal-width confidence bins: count, mean confidence and accuracy in each (empty bins left out)."""
    import pandas as pd

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = which == b
        if mask.any():
            rows.append(
                {
                    "low": edges[b],
                    "high": edges[b + 1],
                    "count": int(mask.sum()),
                    "confidence": float(confidence[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                }
            )
    return pd.DataFrame(rows, columns=["low", "high", "count", "confidence", "accuracy"])


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the count-weighted mean gap between accuracy and confidence over the bins."""
    bins = reliability_bins(confidence, correct, n_bins)
    n = len(confidence)
    return float((bins["count"] / n * (bins["accuracy"] - bins["confidence"]).abs()).sum()) if n else 0.0


def temperature_scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): what a model gives once its logits are divided by T (log p differs from the
    logits by a per-image constant, which softmax ignores)."""
    logits = np.log(np.clip(probabilities, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(
    probabilities: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0
) -> float:
    """The temperature T in [low, high] minimising the negative log-likelihood of softmax(log p / T)
    (temperature scaling, Guo et al. 2017). The likelihood is convex in 1/T, so a golden-section search on
    1/T finds the minimum. T > 1 softens over-confident predictions, T < 1 sharpens under-confident ones;
    the predicted class never changes."""
    log_p = np.log(np.clip(probabilities, 1e-12, 1.0))
    rows = np.arange(len(labels))

    def nll(inverse: float) -> float:
        z = log_p * inverse
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, labels]))

    a, b = 1.0 / high, 1.0 / low
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return float(2.0 / (a + b))


def calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """ECE of a set of predictions (top-class confidence against correctness)."""
    return expected_calibration_error(probabilities.max(axis=1), probabilities.argmax(axis=1) == labels)


def temperature_sentence(summary) -> str:
    """What a run's summary (a ``schemas.Summary``, or its JSON as a dict) says about its temperature
    scaling, for the calibration section and the model card."""
    from fashion_lib import schemas

    if isinstance(summary, dict):
        summary, _ = schemas.check(schemas.Summary, summary, "summary.json")
    if summary is not None and summary.temperature is None and summary.temperature_rejected is not None:
        s = summary
        return (
            f"Temperature scaling was not applied: the fitted T = {s.temperature_rejected:.2f} raised the "
            f"calibration error of the {s.calibration_images or 0:,} validation images it was fitted on "
            f"({wording.percent(s.validation_ece_before or 0, 1)} before, "
            f"{wording.percent(s.validation_ece_after or 0, 1)} after), so the "
            "confidences are the model's own."
        )
    if summary is None or summary.temperature is None:
        return "This model's confidences were not temperature-scaled."
    detail = ""
    if None not in (summary.calibration_images, summary.validation_ece_before, summary.validation_ece_after):
        detail = (
            f", fitted on {summary.calibration_images:,} validation images (their calibration error "
            f"{wording.percent(summary.validation_ece_before, 1)} before, "
            f"{wording.percent(summary.validation_ece_after, 1)} after)"
        )
    return f"Temperature scaling: T = {summary.temperature:.2f}{detail}; the predicted classes are unchanged."


# ------------------------------------------------------------------------------------------ label errors


def label_issues(p: Predictions):
    """Rank test images by how likely their given label is wrong (confident learning, cleanlab).

    The saved probabilities come from a model that never trained on the test images, which is what
    confident learning needs. Returns one row per image, worst label quality first, with ``flagged`` set
    for the images cleanlab's label-issue finder reports."""
    import pandas as pd
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = p.probabilities / p.probabilities.sum(axis=1, keepdims=True)
    # n_jobs=1: cleanlab would otherwise fork a process pool from inside the threaded Streamlit server.
    flagged = find_label_issues(p.labels, probs, n_jobs=1)
    quality = get_label_quality_scores(p.labels, probs)
    table = pd.DataFrame(
        {
            "position": np.arange(len(p.labels)),
            "test index": p.test_index,
            "given label": [config.CLASS_NAMES[c] for c in p.labels],
            "model says": [config.CLASS_NAMES[c] for c in p.predicted],
            "model confidence": p.confidence,
            "label quality": quality,
            "flagged": flagged,
        }
    )
    return table.sort_values("label quality", kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------- tables and compare


def misclassified_table(p: Predictions):
    """Every wrong prediction: test index, true class, predicted class, confidence (most confident first)."""
    import pandas as pd

    wrong = np.flatnonzero(p.wrong)
    table = pd.DataFrame(
        {
            "test index": p.test_index[wrong],
            "true": [config.CLASS_NAMES[c] for c in p.labels[wrong]],
            "predicted": [config.CLASS_NAMES[c] for c in p.predicted[wrong]],
            "confidence": p.confidence[wrong],
        }
    )
    return table.sort_values("confidence", ascending=False, kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class CellComparison:
    only_a: np.ndarray  # test indices in the cell for run A but not for run B
    only_b: np.ndarray
    both: np.ndarray


def compare_cell(a: Predictions, b: Predictions, true_class: int, predicted_class: int) -> CellComparison:
    """Which test images land in the same confusion cell for two runs, and which for only one of them."""
    if not np.array_equal(a.test_index, b.test_index):
        raise ValueError(
            "the two runs were evaluated on different test images; compare runs with the same "
            "test set (test subset 'all')"
        )
    in_a = set(a.test_index[cell_positions(a, true_class, predicted_class)].tolist())
    in_b = set(b.test_index[cell_positions(b, true_class, predicted_class)].tolist())
    return CellComparison(
        np.array(sorted(in_a - in_b), dtype=int),
        np.array(sorted(in_b - in_a), dtype=int),
        np.array(sorted(in_a & in_b), dtype=int),
    )
