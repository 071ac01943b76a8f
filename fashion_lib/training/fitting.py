"""Compile and fit one stage: optimizer, learning-rate schedule, loss, and the callbacks that make a run
resumable (a backup after every epoch, kept until the run completes) and stoppable."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from fashion_lib import config, runs
from fashion_lib.training.callbacks import StopWatch, run_logger
from fashion_lib.training.config import TrainConfig
from fashion_lib.training.pipelines import Splits, make_dataset


def make_optimizer(name: str, learning_rate):
    import keras

    return {
        "adam": lambda: keras.optimizers.Adam(learning_rate),
        "adamw": lambda: keras.optimizers.AdamW(learning_rate),
        "sgd": lambda: keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True),
        "rmsprop": lambda: keras.optimizers.RMSprop(learning_rate),
    }[name]()


def learning_rate(cfg: TrainConfig, base: float, epochs: int, steps_per_epoch: int):
    import keras

    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(base, max(1, epochs * steps_per_epoch))
    return base


def backup_folder(folder: Path, stage: int) -> Path:
    return folder / runs.BACKUP_DIR / f"stage{stage}"


def backup_epoch(backup: Path) -> int | None:
    """Epochs finished in the stage's backup; None when there is none. An unreadable backup is removed
    (the stage then starts over) rather than failing the resumed run."""
    meta_path = backup / "training_metadata.json"
    if not meta_path.exists():
        return None
    meta = runs.read_json(meta_path)
    if meta is None or not isinstance(meta.get("epoch"), int) or meta["epoch"] < 0:
        print(f"the backup in {backup} is unreadable: this stage starts over", flush=True)
        shutil.rmtree(backup, ignore_errors=True)
        return None
    return meta["epoch"]


def epoch_backup(backup: Path, logger):
    """Keras's BackupAndRestore (weights, optimizer state, finished epochs; kept after the fit), except that
    an epoch a stop cut short is not recorded as finished: resuming runs it again, whole."""
    import keras

    class EpochBackup(keras.callbacks.BackupAndRestore):
        def on_epoch_end(self, epoch, logs=None):
            if not logger.cut_short:
                super().on_epoch_end(epoch, logs)

    return EpochBackup(str(backup), double_checkpoint=True, delete_checkpoint=False)


def fit_stage(
    model,
    cfg: TrainConfig,
    folder: Path,
    stage: int,
    train_data,
    val_data,
    epochs: int,
    initial_epoch: int,
    base_rate: float,
    steps: int,
    watch: StopWatch,
    extra_callbacks=(),
):
    """Compile and fit one stage with the run's callbacks; returns (history, stopped).

    The stage's backup (weights, optimizer state, finished epochs) is written after every epoch and kept
    after a stop, so resuming a stopped or interrupted run continues where it was; it is deleted when the
    run completes."""
    import keras

    schedule = learning_rate(cfg, base_rate, epochs - initial_epoch, steps)
    soft_targets = len(train_data.element_spec[1].shape) == 2  # (batch, classes): distillation's targets
    if cfg.label_smoothing or soft_targets:
        # Keras smooths one-hot targets only: the pipelines carry class indices, turned one-hot here.
        import tensorflow as tf

        def one_hot(x, y):
            return x, tf.one_hot(tf.cast(y, tf.int32), config.NUM_CLASSES)

        if not soft_targets:
            train_data = train_data.map(one_hot)
        val_data = val_data.map(one_hot)
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss, accuracy = "sparse_categorical_crossentropy", "accuracy"
    model.compile(optimizer=make_optimizer(cfg.optimizer, schedule), loss=loss, metrics=[accuracy])
    logger = run_logger(folder, stage, epochs, steps, watch, cfg.planned_epochs)
    backup = backup_folder(folder, stage)
    resumed_epoch = backup_epoch(backup)
    callbacks = [epoch_backup(backup, logger), logger]
    if cfg.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=cfg.early_stopping_patience, restore_best_weights=True
            )
        )
    if cfg.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.3, patience=1, min_lr=base_rate / 100
            )
        )
    callbacks.extend(extra_callbacks)
    # Rows of this stage beyond its last finished epoch (a cut-short one, or all of them when nothing was
    # backed up) are written again by the epochs that now run.
    runs.keep_metrics_before(folder, stage, (resumed_epoch or initial_epoch) + 1)
    verbose = 1 if os.isatty(1) else 2
    history = model.fit(
        train_data,
        validation_data=val_data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles
    )
    # A callback may have asked for the stop at an epoch's end (the tuner pruning a trial): no batch saw it.
    return history, logger.stopped or watch.requested()


def fit_on_images(
    model,
    cfg: TrainConfig,
    folder: Path,
    splits: Splits,
    stage: int,
    epochs: int,
    initial_epoch: int,
    base_rate: float,
    watch: StopWatch,
    extra_callbacks=(),
):
    """One stage trained end to end on images through tf.data (augmented, scaled as the config says)."""
    x_train, y_train = splits.image_training_targets()
    train_data = make_dataset(x_train, y_train, cfg.batch_size, cfg.seed, cfg.augment, cfg.pixel_scale)
    val_data = make_dataset(splits.x_val, splits.y_val, cfg.batch_size, scale=cfg.pixel_scale)
    steps = int(np.ceil(len(x_train) / cfg.batch_size))
    return fit_stage(
        model,
        cfg,
        folder,
        stage,
        train_data,
        val_data,
        epochs,
        initial_epoch,
        base_rate,
        steps,
        watch,
        extra_callbacks,
    )
