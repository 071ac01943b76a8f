"""Distillation: a run may learn from finished runs ("teachers") as well as from the labels.

Each training image's target becomes ``(1 - w) · its label + w · what the teachers say about it``, where
the teachers' answer is the average of their (calibrated) probabilities, softened by ``SOFTENING`` (the
probabilities raised to 1/SOFTENING and renormalised, which divides the logits by it: a teacher that is
98 % sure of a training image it has seen still says which other classes it resembles). The image stages
train on these targets (fine-tuning, or a head trained on images); a head trained on cached features keeps
the labels. Validation and test images are never shown to a teacher's answer: a teacher must have been
trained on the same training/validation split (its split checksum), so it has not seen the validation
images the run is calibrated and judged on.

The teachers' answers take one forward pass per teacher over the training images (≈ 3–4 min per
MobileNetV2 at 128 px for 67,000 images on the 2-core machine); they are kept in the run folder until the
run completes, so a resumed run does not compute them again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from fashion_lib import config, lifecycle, models, runs

SOFTENING = 2.0  # the teachers' logits are divided by this (Hinton et al.'s distillation temperature)
TARGETS_FILE = "teacher_targets.npz"  # kept until the run completes (to resume without the teachers' pass)
CHUNK = 2048  # images per progress report and stop check


class TeacherError(ValueError):
    """A teacher run that cannot teach this run (missing, unfinished, damaged, another split)."""


def check_teacher(name: str, split_checksum: str) -> Path:
    """The folder of teacher run ``name`` (a run id, a path or a shipped model's name), checked: completed,
    undamaged, with a model, trained on the split whose checksum is ``split_checksum``."""
    try:
        folder = runs.resolve_run(name)
    except FileNotFoundError:
        raise TeacherError(f"teacher '{name}': no such run (see `python -m fashion_lib runs`)") from None
    info = runs.read_run(folder, shipped=runs.is_shipped(folder))
    if info is None or info.damaged:
        problems = "; ".join(info.problems) if info else "not a run folder"
        raise TeacherError(f"teacher '{name}' cannot be read: {problems}")
    if info.state != lifecycle.COMPLETED or not info.has_model:
        raise TeacherError(
            f"teacher '{name}' has not completed (it is {info.state}): only a finished run teaches"
        )
    theirs = (info.summary.model_extra or {}).get("split_checksum") if info.summary else None
    if theirs != split_checksum:
        raise TeacherError(
            f"teacher '{name}' was trained on another training/validation split ({theirs or 'unknown'}, "
            f"this run {split_checksum}): it may have seen this run's validation images. Train with the "
            "same seed, validation fraction and subset as the teacher"
        )
    return folder


def soften(probs: np.ndarray, softening: float = SOFTENING) -> np.ndarray:
    """Probabilities with their logits divided by ``softening`` (rows sum to 1)."""
    logits = np.log(np.clip(probs.astype(np.float64), 1e-12, 1.0)) / softening
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def mix(labels: np.ndarray, teacher_probs: np.ndarray, weight: float) -> np.ndarray:
    """Targets: ``(1 - weight)`` of each one-hot label plus ``weight`` of the (softened) teachers' answer."""
    one_hot = np.eye(config.NUM_CLASSES, dtype=np.float32)[labels]
    return ((1.0 - weight) * one_hot + weight * teacher_probs).astype(np.float32)


def teachers_answer(
    teachers: list[Path],
    images: np.ndarray,
    progress: Callable[[str], None] = lambda text: None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> np.ndarray | None:
    """The teachers' averaged, softened probabilities for ``images`` (N, 28, 28, 1) uint8; None when a stop
    was requested part-way."""
    from fashion_lib.training.config import TrainConfig
    from fashion_lib.training.pipelines import inference_batch, predict

    total = np.zeros((len(images), config.NUM_CLASSES), dtype=np.float64)
    for number, folder in enumerate(teachers, 1):
        model = models.load_model(folder / runs.MODEL_FILE)
        cfg = TrainConfig.from_run(folder)
        batch = inference_batch(cfg.model_input_size)
        for start in range(0, len(images), CHUNK):
            if stop_requested():
                return None
            progress(
                f"teacher {number} of {len(teachers)} ({folder.name}): {start:,} of {len(images):,} images"
            )
            chunk = images[start : start + CHUNK]
            total[start : start + len(chunk)] += soften(predict(model, chunk, batch, scale=cfg.pixel_scale))
    return (total / len(teachers)).astype(np.float32)


def stored_answer(folder: Path, teachers: tuple[str, ...], count: int) -> np.ndarray | None:
    """The teachers' answer a stopped run kept, if it is for these teachers and this many images."""
    path = folder / TARGETS_FILE
    try:
        with np.load(path) as stored:
            if tuple(str(t) for t in stored["teachers"]) != tuple(teachers):
                return None
            answer = stored["answer"].astype(np.float32)
    except (OSError, ValueError, KeyError):
        return None
    if answer.shape != (count, config.NUM_CLASSES) or not np.all(np.isfinite(answer)):
        return None
    return answer


def store_answer(folder: Path, teachers: tuple[str, ...], answer: np.ndarray) -> None:
    from fashion_lib import files

    with files.atomic(folder / TARGETS_FILE, suffix=".npz") as tmp:
        np.savez_compressed(tmp, teachers=np.array(teachers), answer=answer.astype(np.float32))
