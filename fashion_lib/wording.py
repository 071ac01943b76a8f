"""How numbers, durations and run summaries are put into words for people, the same way on every page."""

from __future__ import annotations

import math

from fashion_lib import schemas

BALANCED_SUBSET = "A subset holds the same number of images of each class."  # the subset pickers' help
RUN_TIME = (
    "The run from the moment its libraries were loaded to its end: product photos, training, calibration "
    "and test predictions (Details gives each stage), on the machine it ran on (a shipped model's card "
    "names it)."
)
LATENCY = (
    "Milliseconds per image when images come in batches; one image alone takes longer (Details: "
    "'latency ms (one image)')."
)
# the size column's help: a new user found a run's file three times a shipped model's, unexplained
MODEL_FILE_SIZE = (
    "The .keras file. A run's keeps the optimizer's state with the weights (Adam: two more numbers per "
    "weight), so it can be resumed: about three times the weights alone. A shipped model or an export holds "
    "the weights only."
)


def duration(seconds: float | None) -> str:
    """'45 s', '3 min 20 s', '5 min', '1 h 05 min', '2 h'; '<1 s' for a moment ("training 0 s" read like a
    bug); 'unknown' for None."""
    if seconds is None:
        return "unknown"
    if 0 < seconds < 0.5:
        return "<1 s"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min" + (f" {seconds % 60:02d} s" if seconds % 60 else "")
    minutes = seconds % 3600 // 60
    return f"{seconds // 3600} h" + (f" {minutes:02d} min" if minutes else "")


def percent(share: float | None, digits: int = 2) -> str:
    """0.9301 → '93.01 %' (one format for every accuracy the app shows); '—' for None."""
    return "—" if share is None else f"{100 * share:.{digits}f} %"


def confidence(probability: float) -> str:
    """A model's probability as a person reads it, the same on every page: one decimal ('99.6 %'), and
    '>99.9 %' / '<0.1 %' near the ends instead of a '100 %' or '0 %' the model did not say (0.9955 read
    "100 %" in one line and "99.6 %" in the next)."""
    if probability != probability:  # NaN: a damaged prediction
        return "—"
    if probability >= 1 or probability <= 0:
        return f"{100 * min(max(probability, 0.0), 1.0):.0f} %"
    if probability >= 0.9995:
        return ">99.9 %"
    if probability < 0.0005:
        return "<0.1 %"
    return f"{100 * probability:.1f} %"


def number_cell(value, digits: int = 0) -> str:
    """A table cell for a number a person reads: '7,316', '5.5'; '—' where the run has none (a stage a model
    has not got read "None" in Compare's details)."""
    if value is None or value != value:
        return "—"
    return f"{value:,.{digits}f}"


def share_of_row(share: float, count: int) -> str:
    """A cell of a row-normalised matrix: '12 %', '<1 %' for a few images (never '0 %' when there are
    some: 5 of 1,000 is 0.5 %, which Python rounds to 0), '>99 %' for all but a few (never '100 %' unless
    all), '0' when there are none."""
    if count == 0:
        return "0"
    if share < 0.01:
        return "<1 %"
    if 0.99 < share < 1:
        return ">99 %"
    return f"{math.floor(100 * share + 0.5 + 1e-9)} %"  # halves up (round() made 35 and 45 of 1,000 "4 %")


def summary_line(summary: schemas.Summary) -> str:
    """Test accuracy, macro-F1, parameters and times of a finished run, in one line (what is recorded)."""
    parts = []
    if summary.test_accuracy is not None:
        n = summary.test_images
        parts.append(
            f"Test accuracy **{percent(summary.test_accuracy)}**" + (f" on {n:,} test images" if n else "")
        )
    elif summary.validation_accuracy is not None:
        parts.append(f"Validation accuracy **{percent(summary.validation_accuracy)}** (no test evaluation)")
    if summary.macro_f1 is not None:
        parts.append(f"macro-F1 {summary.macro_f1:.4f}")
    params, tuned = summary.parameters.get("stage1"), summary.parameters.get("stage2")
    if params and tuned:  # "15,370 trainable" alone made a fully fine-tuned network look frozen
        parts.append(
            f"{params.total:,} parameters ({params.trainable:,} trainable in stage 1, {tuned.trainable:,} "
            "in fine-tuning)"
        )
    elif params:
        parts.append(f"{params.total:,} parameters ({params.trainable:,} trainable)")
    if summary.wall_seconds is not None:
        parts.append(f"run time {duration(summary.wall_seconds)}")
    if summary.weights:
        parts.append(f"weights: {summary.weights}")
    return " · ".join(parts)
