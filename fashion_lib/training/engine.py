"""The training engine: one ``train`` for every caller (command line, Train page, tuner): config in, run
folder out.

``train(config)`` makes a run folder under ``$FASHION_HOME/runs`` and writes, as it goes: the config, the
status (through ``lifecycle``, as the run's owner), per-epoch metrics and in-epoch progress, the model
(atomically, as ``model.keras``), the test-set predictions and a summary. Stage 1 trains with the backbone
frozen (feature extraction); stage 2, when asked for, unfreezes the top K backbone layers and continues at a
lower learning rate (fine-tuning).
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import resource
import shutil
import signal
import time
from pathlib import Path

import numpy as np

from fashion_lib import data, evaluate, files, lifecycle, models, processes, runs
from fashion_lib.training import distill, photo_mix, speed
from fashion_lib.training.callbacks import StopRequested, StopWatch
from fashion_lib.training.config import CALIBRATION_IMAGES, TrainConfig
from fashion_lib.training.feature_cache import train_head_on_features
from fashion_lib.training.fitting import fit_on_images
from fashion_lib.training.pipelines import Splits, inference_batch, make_splits, predict

STAGE1_WEIGHTS = "stage1.weights.h5"  # stage 1's result, kept until the run completes (to resume stage 2)


def start_run(cfg: TrainConfig, runs_root: Path | None = None) -> Path:
    """Create the run folder for ``cfg`` (status 'queued', owned by this process) without training.

    Missing weights and teachers that cannot teach are refused first, so they leave no failed run behind."""
    weights = models.resolve_weights(cfg.model, cfg.weights)
    distill.named_runs(cfg.teachers)
    return runs.create_run(cfg.to_dict(), runs.new_run_id(cfg.model, cfg.run_tag(weights.label)), runs_root)


def _install_sigterm_handler(folder: Path) -> None:
    """SIGTERM (the stop button, `kill`) becomes a graceful stop request."""

    def handler(signum, frame):
        lifecycle.request_stop(folder)

    # Outside the main thread (a test runner thread) signals cannot be caught; the STOP file still works.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, handler)


def train(
    cfg: TrainConfig | None = None,
    run_dir: Path | None = None,
    extra_callbacks=(),
    handle_sigterm: bool = True,
) -> Path:
    """Train ``cfg`` into a new run folder, or continue the run in ``run_dir`` (config read from it).

    Returns the run folder. A stopped, failed or interrupted run given as ``run_dir`` continues from its
    last finished epoch; a completed run, or one another live process owns, raises
    ``lifecycle.RunStateError``. A stop request (``lifecycle.request_stop`` or SIGTERM) ends the run with the
    model saved and status 'stopped' (``handle_sigterm=False`` leaves SIGTERM to the caller: the tuner's
    workers). Any error — in the config, the data, the weights, training or saving
    — ends the run 'failed' with the error's one-line reason, then propagates.
    """
    me = processes.current()
    if run_dir is None:
        if cfg is None:
            raise ValueError("train() needs a config or an existing run folder")
        run_dir = start_run(cfg)
    else:
        lifecycle.transition(run_dir, lifecycle.QUEUED, by=me)  # resume, or keep the run it was handed
    watch = StopWatch(run_dir, me)
    if handle_sigterm:
        _install_sigterm_handler(run_dir)
    if watch.requested():  # stopped while it waited for the machine
        lifecycle.transition(run_dir, lifecycle.STOPPED, by=me, finished=time.time())
        (run_dir / lifecycle.STOP_FILE).unlink(missing_ok=True)
        return run_dir
    with lifecycle.running(run_dir, me):
        cfg = TrainConfig.from_run(run_dir)
        state = _train_stages(cfg, run_dir, watch, extra_callbacks)
    lifecycle.transition(run_dir, state, by=me, finished=time.time())
    (run_dir / lifecycle.STOP_FILE).unlink(missing_ok=True)
    if state == lifecycle.COMPLETED:  # what a resume would need is no longer needed
        shutil.rmtree(run_dir / runs.BACKUP_DIR, ignore_errors=True)
        (run_dir / STAGE1_WEIGHTS).unlink(missing_ok=True)
        (run_dir / distill.TARGETS_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError, ValueError, TypeError):  # only an estimate: never fail a run
            speed.record_run(cfg, run_dir)
    return run_dir


def _train_stages(cfg: TrainConfig, folder: Path, watch: StopWatch, extra_callbacks=()) -> str:
    import keras

    keras.utils.set_random_seed(cfg.seed)
    wall_started, cpu_started = time.perf_counter(), _cpu_seconds()
    ds = data.load()
    splits = make_splits(cfg, ds)
    weights = models.resolve_weights(cfg.model, cfg.weights)  # missing weights fail before any photo work
    model = cfg.build_model()
    stage1_weights = folder / STAGE1_WEIGHTS
    timings: dict[str, float | int] = {}
    image_stage_left = cfg.fine_tune or not (stage1_weights.exists() or cfg.uses_feature_cache())
    distilling = bool(cfg.teachers) and image_stage_left
    stored = distill.stored_answer(folder, cfg.teachers) if cfg.teachers else None
    # Checked before any photo work, as the weights are, unless a stopped run kept the answer: then it goes on
    # learning from what it began with (recorded as the runs that gave it), whatever the names stand for now.
    teachers = None
    if distilling and stored is None:
        teachers = distill.check_teachers(cfg.teachers, splits, ds)
    # resumed after its last image stage: the targets are not needed again, the record of the teachers is
    taught = None
    if cfg.teachers and not distilling:  # (named as configured when its stored answer was lost)
        named = [{"run_id": name} for name in cfg.teachers]
        taught = stored or distill.Answer(np.zeros((0, 10), np.float32), named)
    if cfg.photo_mix and image_stage_left:
        started = time.perf_counter()
        splits = _with_photos(cfg, folder, splits, watch, ds)
        if splits is None:  # stopped while converting: the photos converted so far are kept
            return lifecycle.STOPPED
        timings["photo_conversion_seconds"] = time.perf_counter() - started
    if distilling:
        found = _with_teachers(cfg, folder, splits, watch, ds, teachers, stored)
        if found is None:
            return lifecycle.STOPPED
        splits, taught = found
    if taught is not None and taught.seconds is not None:
        timings["teacher_seconds"] = taught.seconds  # what the pass cost, also when a resume reused it
        timings["teacher_pass_reused"] = taught is stored
    params: dict[str, dict[str, int]] = {"stage1": models.parameter_counts(model)}
    stopped = False

    if stage1_weights.exists():  # resumed after stage 1 had finished
        model.load_weights(stage1_weights)
    else:
        started = time.perf_counter()
        if cfg.uses_feature_cache():
            try:
                _, stopped = train_head_on_features(
                    model, cfg, folder, splits, weights, timings, watch, extra_callbacks
                )
            except StopRequested:
                stopped = True
        else:
            _, stopped = fit_on_images(
                model, cfg, folder, splits, 1, cfg.epochs, 0, cfg.learning_rate, watch, extra_callbacks
            )
        timings["stage1_seconds"] = time.perf_counter() - started
        if not stopped:
            model.save_weights(stage1_weights)

    if cfg.fine_tune and not stopped:
        models.set_stage(model, 2, cfg.fine_tune_layers)
        params["stage2"] = models.parameter_counts(model)
        started = time.perf_counter()
        epochs_done = len([r for r in runs.read_metrics(folder) if r["stage"] == 1])
        _, stopped = fit_on_images(
            model,
            cfg,
            folder,
            splits,
            2,
            epochs_done + cfg.fine_tune_epochs,
            epochs_done,
            cfg.fine_tune_learning_rate,
            watch,
            extra_callbacks,
        )
        timings["stage2_seconds"] = time.perf_counter() - started

    model = models.as_float32(model)  # what is saved, evaluated and explained computes in float32
    summary = _evaluate_and_save(model, cfg, folder, splits, timings)
    cpu_seconds = _cpu_seconds() - cpu_started
    summary.update(
        {
            "model": cfg.model,
            "display_name": models.DISPLAY_NAMES[cfg.model],
            "weights": weights.label,
            "input_size": cfg.model_input_size,
            "training_images": len(splits.x_train),
            "validation_images": len(splits.x_val),
            "training_photos": 0 if splits.x_photos is None else len(splits.x_photos),
            **(_distillation_summary(cfg, taught, cpu_seconds) if taught else {}),
            "epochs_run": len(runs.read_metrics(folder)),
            "parameters": params,
            "feature_cache": cfg.uses_feature_cache(),
            "input_scaling": cfg.input_scaling,
            "compute_dtype": cfg.compute_dtype,
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()},
            "wall_seconds": round(time.perf_counter() - wall_started, 3),
            "cpu_seconds": round(cpu_seconds, 1),  # all threads: what the run cost
            "library_versions": library_versions(),
            "data_fingerprint": data.DATA_FINGERPRINT,
            "split_checksum": splits.checksum(),
            "stopped_early_by_user": stopped,
            **({"stop_reason": watch.reason()} if stopped else {}),
        }
    )
    runs.write_json(folder / runs.SUMMARY_FILE, summary)
    runs.write_json(folder / runs.PROGRESS_FILE, {"phase": "done", "time": time.time()})
    return lifecycle.STOPPED if stopped else lifecycle.COMPLETED


def _with_photos(
    cfg: TrainConfig, folder: Path, splits: Splits, watch: StopWatch, ds: data.FashionMNIST
) -> Splits | None:
    """``splits`` with ``cfg.photo_mix`` training-split images added as converted product photos."""
    index = photo_mix.choose(splits.y_train, splits.train_index, cfg.photo_mix, cfg.seed)

    def progress(done: int, total: int) -> None:
        _phase(folder, f"product photos for training: {done:,} of {total:,} converted")

    found = photo_mix.converted(ds.x_train, index, progress, watch.requested)
    if found is None:
        return None
    photos, kept = found  # the few photos the conversion refuses are left out
    return dataclasses.replace(splits, x_photos=photos[..., None], y_photos=ds.y_train[kept])


def _with_teachers(
    cfg: TrainConfig,
    folder: Path,
    splits: Splits,
    watch: StopWatch,
    ds: data.FashionMNIST,
    teachers: list[distill.Teacher] | None,
    stored: distill.Answer | None,
) -> tuple[Splits, distill.Answer] | None:
    """``splits`` with the targets the teachers and the labels make together (see distill.py), and the
    teachers' answer (the one a stopped run ``stored`` when it is for these images); None when stopped
    while the teachers answered."""
    x, y = splits.image_training_set()
    answer = stored if stored is not None and len(stored.probs) == len(x) else None
    if answer is None:
        teachers = teachers or distill.check_teachers(cfg.teachers, splits, ds)
        started = time.perf_counter()
        probs = distill.teachers_answer(teachers, x, lambda text: _phase(folder, text), watch.requested)
        if probs is None:
            return None
        answer = distill.Answer(probs, [t.record for t in teachers], time.perf_counter() - started)
        distill.store_answer(folder, cfg.teachers, answer)
    return dataclasses.replace(splits, targets=distill.mix(y, answer.probs, cfg.distill_weight)), answer


def _distillation_summary(cfg: TrainConfig, taught: distill.Answer, cpu_seconds: float) -> dict:
    """What a distilled run records: its teachers (as they were when they taught) and the CPU time of all
    the training that went into it."""
    total = distill.total_cost(cpu_seconds, taught.teachers)
    return {
        "teachers": taught.teachers,
        "distill_weight": cfg.distill_weight,
        **({"cpu_seconds_with_teachers": round(total, 1)} if total is not None else {}),
    }


def _cpu_seconds() -> float:
    """CPU time of this process so far (user + system, all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _phase(folder: Path, text: str, trained: bool = False) -> None:
    runs.write_json(folder / runs.PROGRESS_FILE, {"phase": text, "time": time.time(), "trained": trained})


def _evaluate_and_save(model, cfg: TrainConfig, folder: Path, splits: Splits, timings: dict) -> dict:
    """Validation accuracy, calibration (on the validation split), the saved model, and — unless the
    config says otherwise (tuning trials) — test-set predictions and metrics."""
    batch = inference_batch(cfg.model_input_size)
    _phase(folder, "evaluating on the validation split", trained=True)
    val_probs = predict(model, splits.x_val, batch_size=batch, scale=cfg.pixel_scale)
    summary: dict = {"validation_accuracy": float(np.mean(val_probs.argmax(1) == splits.y_val))}
    if cfg.temperature_scaling:
        _phase(folder, "calibrating on the validation split", trained=True)
        started = time.perf_counter()
        summary.update(calibrate(model, val_probs, splits.y_val, cfg.seed))
        timings["calibration_seconds"] = time.perf_counter() - started
    model_path = _save_model_atomically(model, folder)
    sample = splits.x_val
    if cfg.evaluate_test:
        _phase(folder, "evaluating on the test set", trained=True)
        started = time.perf_counter()
        probs = predict(model, splits.x_test, batch_size=batch, scale=cfg.pixel_scale)
        timings["test_prediction_seconds"] = time.perf_counter() - started
        np.savez_compressed(
            folder / runs.PREDICTIONS_FILE,
            probabilities=probs,
            labels=splits.y_test,
            test_index=splits.test_index,
        )
        summary.update(evaluate.classification_summary(splits.y_test, probs), test_images=len(splits.x_test))
        sample = splits.x_test
    summary.update(measure_latency(model, sample, batch=batch), model_size_bytes=model_path.stat().st_size)
    return summary


def calibrate(model, val_probs: np.ndarray, val_labels: np.ndarray, seed: int) -> dict[str, float]:
    """Temperature scaling: fit T on (up to CALIBRATION_IMAGES of) the validation predictions and fold it
    into the model's output layer, unless it raises those images' calibration error (on a few images the
    likelihood's best T can: a 1,000-image run's T = 0.59 took it from 8.1 % to 9.9 %). Returns T (as
    ``temperature`` or ``temperature_rejected``) and the validation ECE before and after it."""
    n = len(val_labels)
    pick = np.sort(np.random.default_rng(seed).permutation(n)[: min(n, CALIBRATION_IMAGES)])
    probs, labels = val_probs[pick], val_labels[pick]
    temperature = evaluate.fit_temperature(probs, labels)
    before = evaluate.calibration_error(probs, labels)
    after = evaluate.calibration_error(evaluate.temperature_scaled(probs, temperature), labels)
    applied = after <= before
    if applied:
        models.fold_temperature(model, temperature)
    return {
        "temperature" if applied else "temperature_rejected": round(temperature, 4),
        "calibration_images": len(pick),
        "validation_ece_before": round(before, 4),
        "validation_ece_after": round(after, 4),
    }


def _save_model_atomically(model, folder: Path) -> Path:
    target = folder / runs.MODEL_FILE
    with files.atomic(target, suffix=".keras") as tmp:
        model.save(tmp)
    return target


def measure_latency(model, images: np.ndarray, batch: int = 256, repeats: int = 20) -> dict[str, float]:
    """Milliseconds per image, batched and one image at a time (warm, median of ``repeats``)."""
    x = images[:batch].astype(np.float32)
    model(x[:1], training=False)
    model(x, training=False)
    started = time.perf_counter()
    model(x, training=False)
    batched = (time.perf_counter() - started) / len(x)
    singles = []
    for i in range(repeats):
        started = time.perf_counter()
        model(x[i % len(x) : i % len(x) + 1], training=False)
        singles.append(time.perf_counter() - started)
    return {
        "latency_ms_per_image_batched": 1000 * batched,
        "latency_ms_single_image": 1000 * float(np.median(singles)),
    }


def library_versions() -> dict[str, str]:
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }
