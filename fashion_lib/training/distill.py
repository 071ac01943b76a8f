"""Distillation: a run may learn from finished runs ("teachers") as well as from the labels.

Each training image's target becomes ``(1 - w) · its label + w · what the teachers say about it``, where
the teachers' answer is the average of their (calibrated) probabilities, softened by ``SOFTENING`` (the
probabilities raised to 1/SOFTENING and renormalised, which divides the logits by it: a teacher that is
98 % sure of a training image it has seen still says which other classes it resembles). The image stages
train on these targets (fine-tuning, or a head trained on images); a head trained on cached features keeps
the labels. A teacher must not have trained on any of the run's validation images (which the run is
calibrated and judged on): its training split is rebuilt from its config and compared.

The teachers' answers take one forward pass per teacher over the training images (≈ 3–4 min per
MobileNetV2 at 128 px for 67,000 images on the 2-core machine); they are kept in the run folder until the
run completes, so a resumed run does not compute them again; what the teachers were (their run ids,
accuracy, cost, and the runs they learned from in turn) is recorded then, in the summary, for the card.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fashion_lib import config, data, files, lifecycle, models, runs

SOFTENING = 2.0  # the teachers' logits are divided by this (Hinton et al.'s distillation temperature)
TARGETS_FILE = "teacher_targets.npz"  # kept until the run completes (to resume without the teachers' pass)
CHUNK = 2048  # images per progress report and stop check


class TeacherError(ValueError):
    """A teacher run that cannot teach this run (missing, unfinished, damaged, saw its validation images)."""


@dataclass(frozen=True)
class Teacher:
    name: str  # as the config names it
    folder: Path
    record: dict[str, Any]  # run id, test accuracy, CPU seconds (its own teachers' included), lineage


@dataclass(frozen=True)
class Answer:
    """The teachers' averaged, softened probabilities for the image stages' images, what the teachers were,
    and what the pass cost (kept across a resume)."""

    probs: np.ndarray
    teachers: list[dict[str, Any]]
    seconds: float | None = None  # None: not known


def cost_with_teachers(summary: dict[str, Any]) -> float | None:
    """CPU seconds that went into a run: its own, and for a distilled run its teachers' too."""
    return summary.get("cpu_seconds_with_teachers", summary.get("cpu_seconds"))


def lineage(run_id: str, summary: dict[str, Any]) -> dict[str, Any]:
    """{run id: its own CPU seconds} for a run and every run it learned from, directly or not (each once),
    from the teacher records in its ``summary`` (None for a cost that is not known)."""
    found = {run_id: summary.get("cpu_seconds")}
    for number, record in enumerate(summary.get("teachers") or []):
        found.update(_record_lineage(record, f"{run_id}'s teacher {number + 1}"))
    return found


def _record_lineage(record: Any, unnamed: str) -> dict[str, Any]:
    """A teacher record's lineage. A record from before lineages were kept has it rebuilt from its run's
    summary while that run is here; otherwise (the run deleted) its cost, its own teachers' included, stands
    for it alone."""
    if not isinstance(record, dict) or not record.get("run_id"):
        return {unnamed: None}
    if isinstance(record.get("lineage"), dict):
        return record["lineage"]
    run_id = str(record["run_id"])
    try:
        summary = runs.read_json(runs.resolve_run(run_id) / runs.SUMMARY_FILE)
    except FileNotFoundError:
        summary = None
    return lineage(run_id, summary) if summary else {run_id: record.get("cpu_seconds")}


def total_cost(own: float, records: list[dict[str, Any]]) -> float | None:
    """A distilled run's own CPU seconds plus those of every run in its teachers' lineages, a run reached
    through two teachers counted once; None when one of them is not known."""
    costs = lineage("", {"cpu_seconds": own, "teachers": records})
    known = all(isinstance(c, int | float) for c in costs.values())
    return sum(costs.values()) if known else None


def check_teachers(names: tuple[str, ...], splits, ds: data.FashionMNIST) -> list[Teacher]:
    """The teachers named, checked: each an existing, completed, undamaged run with a model, named once,
    that never trained on one of ``splits``' validation images — nor did its own teachers, if it learned
    from some (what they knew is in its answers)."""
    teachers: list[Teacher] = []
    for name, info in zip(names, named_runs(names), strict=True):
        folder = info.folder
        _never_saw(folder, name, splits, ds, seen=set())
        summary = runs.read_json(folder / runs.SUMMARY_FILE) or {}
        run_id = runs.shipped_from(info) or folder.name  # a shipped model: the run it was shipped from
        record = {
            "run_id": run_id,
            "test_accuracy": summary.get("test_accuracy"),
            "cpu_seconds": cost_with_teachers(summary),
            "lineage": lineage(run_id, summary),
        }
        teachers.append(Teacher(name, folder, record))
    return teachers


def named_runs(names: tuple[str, ...]) -> list[runs.RunInfo]:
    """The teachers named, as far as they can be checked before a run exists: each an existing, undamaged,
    completed run with a model, named once (TeacherError otherwise). The check against the validation images
    needs the run's data split: ``check_teachers`` does it."""
    found: list[runs.RunInfo] = []
    for name in names:
        info = _finished_run(name, "teacher")
        if any(other.folder.resolve() == info.folder.resolve() for other in found):
            raise TeacherError(f"teacher '{name}' is named twice: each teacher counts once")
        found.append(info)
    return found


def _finished_run(name: str, role: str) -> runs.RunInfo:
    """Run ``name``: existing, undamaged, completed, with a model (``role`` names it in the error
    otherwise)."""
    try:
        folder = runs.resolve_run(name)
    except FileNotFoundError:
        raise TeacherError(f"{role} '{name}': no such run (see `python -m fashion_lib runs`)") from None
    info = runs.read_folder(folder)
    if info is None or info.damaged:
        problems = "; ".join(info.problems) if info else "not a run folder"
        raise TeacherError(f"{role} '{name}' cannot be read: {problems}")
    if info.state != lifecycle.COMPLETED or not info.has_model:
        raise TeacherError(
            f"{role} '{name}' has not completed (it is {info.state}): only a finished run teaches"
        )
    return info


def _never_saw(folder: Path, name: str, splits, ds: data.FashionMNIST, seen: set[Path]) -> None:
    """TeacherError when the run in ``folder`` (teacher ``name``, or one it learned from, directly or not)
    trained on one of ``splits``' validation images."""
    from fashion_lib.training.config import TrainConfig
    from fashion_lib.training.pipelines import make_splits

    who = f"teacher '{name}'" if not seen else f"'{folder.name}', which teacher '{name}' learned from,"
    seen.add(folder.resolve())
    cfg = TrainConfig.from_run(folder)
    overlap = np.intersect1d(make_splits(cfg, ds).train_index, splits.val_index).size
    if overlap:
        raise TeacherError(
            f"{who} trained on {overlap:,} of this run's {len(splits.val_index):,} validation images, so the "
            "run's validation accuracy and calibration would not be honest: use a teacher trained with the "
            "same seed, validation fraction and subset"
        )
    for ancestor in _taught_by(folder, cfg, name):
        if ancestor.resolve() not in seen:
            _never_saw(ancestor, name, splits, ds, seen)


def _taught_by(folder: Path, cfg, name: str) -> list[Path]:
    """The folders of the runs that taught the run in ``folder`` (``cfg``), found by the run ids its summary
    recorded when they taught, not by what its configured names stand for now (a shipped name may have been
    shipped again since). A recorded run that is not here is found through its configured name while that
    still stands for it (a shipped model whose run folder is not here)."""
    role = f"teacher '{name}' learned from"
    summary = runs.read_json(folder / runs.SUMMARY_FILE) or {}
    records = [r for r in summary.get("teachers") or [] if isinstance(r, dict) and r.get("run_id")]
    if len(records) != len(cfg.teachers):  # nothing recorded yet: the names are all there is
        return [_finished_run(earlier, role).folder for earlier in cfg.teachers]
    found = []
    for earlier, record in zip(cfg.teachers, records, strict=True):
        run_id = str(record["run_id"])
        try:
            found.append(_finished_run(run_id, role).folder)
            continue
        except TeacherError as exc:
            why = str(exc)
            info = _finished_run(earlier, role)
        if (runs.shipped_from(info) or info.folder.name) != run_id:
            raise TeacherError(
                f"{why}; '{earlier}' now stands for another run, so the training images of the run that "
                "taught it cannot be checked against this run's validation images"
            )
        found.append(info.folder)
    return found


def seconds_per_image(name: str) -> float | None:
    """How long teacher ``name`` took per test image when its run predicted them (None when unknown)."""
    try:
        summary = runs.read_json(runs.resolve_run(name) / runs.SUMMARY_FILE) or {}
    except FileNotFoundError:
        return None
    seconds, images = summary.get("test_prediction_seconds"), summary.get("test_images")
    ok = isinstance(seconds, int | float) and isinstance(images, int) and seconds > 0 and images > 0
    return seconds / images if ok else None


def soften(probs: np.ndarray, softening: float = SOFTENING) -> np.ndarray:
    """Probabilities with their logits divided by ``softening`` (rows sum to 1)."""
    from fashion_lib import evaluate

    return evaluate.temperature_scaled(probs.astype(np.float64), softening).astype(np.float32)


def mix(labels: np.ndarray, teacher_probs: np.ndarray, weight: float) -> np.ndarray:
    """Targets: ``(1 - weight)`` of each one-hot label plus ``weight`` of the (softened) teachers' answer."""
    one_hot = np.eye(config.NUM_CLASSES, dtype=np.float32)[labels]
    return ((1.0 - weight) * one_hot + weight * teacher_probs).astype(np.float32)


def teachers_answer(
    teachers: list[Teacher],
    images: np.ndarray,
    progress: Callable[[str], None] = lambda text: None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> np.ndarray | None:
    """The teachers' averaged, softened probabilities for ``images`` (N, 28, 28, 1) uint8; None when a stop
    was requested part-way."""
    from fashion_lib.training.config import TrainConfig
    from fashion_lib.training.pipelines import inference_batch, predict

    total = np.zeros((len(images), config.NUM_CLASSES), dtype=np.float64)
    for number, teacher in enumerate(teachers, 1):
        try:
            model = models.load_model(teacher.folder / runs.MODEL_FILE)
        except Exception as exc:  # a damaged file fails in zipfile, h5py or Keras, each its own way
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TeacherError(f"teacher '{teacher.name}': its model cannot be loaded ({reason})") from None
        cfg = TrainConfig.from_run(teacher.folder)
        batch = inference_batch(cfg.model_input_size)
        for start in range(0, len(images), CHUNK):
            if stop_requested():
                return None
            progress(
                f"teacher {number} of {len(teachers)} ({teacher.folder.name}): "
                f"{start:,} of {len(images):,} images"
            )
            chunk = images[start : start + CHUNK]
            total[start : start + len(chunk)] += soften(predict(model, chunk, batch, scale=cfg.pixel_scale))
    return (total / len(teachers)).astype(np.float32)


def stored_answer(folder: Path, names: tuple[str, ...], count: int | None = None) -> Answer | None:
    """The answer a stopped run kept, if it is readable and for these teachers (and ``count`` images)."""
    try:
        stored = files.read_arrays(folder / TARGETS_FILE)
        if tuple(str(t) for t in stored["names"]) != tuple(names):
            return None
        answer = Answer(
            stored["answer"].astype(np.float32),
            json.loads(str(stored["teachers"])),
            float(stored["seconds"]) if np.isfinite(stored["seconds"]) else None,
        )
    except Exception:  # missing, damaged (files.read_arrays), or senseless entries (JSON, shapes): made again
        return None
    rows = answer.probs.shape[0] if answer.probs.ndim == 2 else -1
    if (
        answer.probs.shape != (rows, config.NUM_CLASSES)
        or (count is not None and rows != count)
        or not np.all(np.isfinite(answer.probs))
        or not isinstance(answer.teachers, list)
        or not all(isinstance(t, dict) for t in answer.teachers)
    ):
        return None
    return answer


def store_answer(folder: Path, names: tuple[str, ...], answer: Answer) -> None:
    with files.atomic(folder / TARGETS_FILE, suffix=".npz") as tmp:
        np.savez_compressed(
            tmp,
            names=np.array(names),
            answer=answer.probs.astype(np.float32),
            teachers=np.array(json.dumps(answer.teachers)),
            seconds=np.array(np.nan if answer.seconds is None else answer.seconds),
        )
