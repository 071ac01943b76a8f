"""What each JSON file of a run folder must hold, checked on every read.

Run folders are written by a training process and read by every page, the command line, the tuner and the
report. A reader never trusts them: a half-written, hand-edited or damaged file is reported as a problem
("summary.json: test_accuracy: should be a number") and the rest of the app keeps working. Unknown extra
fields are kept (older and newer versions of the app write more or fewer fields).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

StoredState = Literal["queued", "running", "stopping", "stopped", "completed", "failed"]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class StatusFile(_Lenient):
    """``status.json``: the stored state of a run or job, written by its one owner at a time."""

    state: StoredState
    error: str | None = None
    owner: dict[str, Any] | None = None
    queued_at: float | None = None
    started: float | None = None
    finished: float | None = None
    updated: float | None = None


class JobFile(_Lenient):
    """``job.json``: the process a launcher started for the run (written once, by the launcher)."""

    token: str
    pid: int = Field(gt=0)
    start_ticks: int | None = None
    boot_id: str | None = None
    command: list[str] = []
    launched_at: float


class MetricsRow(_Lenient):
    """One line of ``metrics.jsonl``: one finished epoch. Losses may be NaN (a diverged run)."""

    stage: int = Field(default=1, ge=1, le=2)
    epoch: int = Field(ge=1)
    seconds: float = Field(default=0.0, ge=0)
    learning_rate: float | None = None
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    partial: bool = False
    batches: int | None = Field(default=None, ge=1)  # training batches done in the epoch
    warm_seconds: float | None = Field(default=None, ge=0)  # of ``seconds``, the first batch (graph tracing)

    @field_validator("accuracy", "val_accuracy")
    @classmethod
    def _share(cls, value: float | None) -> float | None:
        if value is not None and not (0.0 <= value <= 1.0):  # NaN fails too: an accuracy is never NaN
            raise ValueError("should be between 0 and 1")
        return value


class ParameterCounts(_Lenient):
    total: int = Field(ge=0)
    trainable: int = Field(ge=0)
    non_trainable: int = Field(default=0, ge=0)
    backbone_trainable: int = Field(default=0, ge=0)


class Summary(_Lenient):
    """``summary.json`` (or a shipped model's ``card.json``): what a finished run measured.

    Runs of a tuning trial are evaluated on their validation split only, so the test fields are optional."""

    model: str | None = None
    display_name: str | None = None
    weights: str | None = None
    input_size: int | None = Field(default=None, ge=1)
    training_images: int | None = Field(default=None, ge=0)
    validation_images: int | None = Field(default=None, ge=0)
    training_photos: int | None = Field(default=None, ge=0)
    test_images: int | None = Field(default=None, ge=0)
    epochs_run: int | None = Field(default=None, ge=0)
    parameters: dict[str, ParameterCounts] = {}
    test_accuracy: float | None = None
    macro_f1: float | None = None
    validation_accuracy: float | None = None
    per_class_f1: dict[str, float] = {}
    wall_seconds: float | None = Field(default=None, ge=0)
    model_size_bytes: int | None = Field(default=None, ge=0)
    latency_ms_per_image_batched: float | None = Field(default=None, ge=0)
    latency_ms_single_image: float | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, gt=0)
    temperature_rejected: float | None = Field(default=None, gt=0)  # fitted, but it raised the error
    calibration_images: int | None = Field(default=None, ge=0)
    validation_ece_before: float | None = Field(default=None, ge=0, le=1)
    validation_ece_after: float | None = Field(default=None, ge=0, le=1)

    @field_validator("test_accuracy", "macro_f1", "validation_accuracy")
    @classmethod
    def _share(cls, value: float | None) -> float | None:
        if value is not None and not (0.0 <= value <= 1.0):
            raise ValueError("should be between 0 and 1")
        return value

    @field_validator("per_class_f1")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        for name, f1 in value.items():
            if not (0.0 <= f1 <= 1.0):  # NaN fails too
                raise ValueError(f"F1 of '{name}' should be between 0 and 1")
        return value


class Progress(_Lenient):
    """``progress.json``: where the training process is within the current phase."""

    phase: str = "starting"
    stage: int = 1
    epoch: int = Field(default=1, ge=1)
    epochs: int = Field(default=1, ge=1)  # the current stage ends after this epoch
    planned_epochs: int = Field(default=0, ge=0)  # all stages together (0: not recorded)
    batch: int = Field(default=0, ge=0)
    batches: int = Field(default=1, ge=1)
    epoch_elapsed: float = Field(default=0.0, ge=0)
    warm_batch: int = Field(default=0, ge=0)  # batches done when the first one ended (warm-up excluded)
    warm_elapsed: float = Field(default=0.0, ge=0)
    phase_started: float | None = None
    time: float | None = None
    trained: bool = False  # a phase after the last epoch (evaluating, calibrating): the bar stays full


def describe(error: ValidationError, file_name: str) -> str:
    """One line naming each wrong field: ``summary.json: test_accuracy: should be a number``."""
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "the file"
        message = item["msg"].replace("Input should be", "should be").replace("Value error, ", "")
        parts.append(f"{where}: {message}")
    more = len(error.errors()) - 3
    return f"{file_name}: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def check(schema: type[BaseModel], value: Any, file_name: str) -> tuple[Any, str | None]:
    """(the validated model, None) or (None, what is wrong)."""
    if value is None:
        return None, f"{file_name} is missing or is not a JSON object"
    try:
        return schema.model_validate(value), None
    except ValidationError as exc:
        return None, describe(exc, file_name)
