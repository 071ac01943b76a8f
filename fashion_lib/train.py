"""One training function for every caller (command line, training page, tuner): config in, run folder out.

``train(config)`` makes a run folder under ``$FASHION_HOME/runs`` and writes, as it goes: the config, the
status, per-epoch metrics and in-epoch progress, the model (atomically, as ``model.keras``), the test-set
predictions and a summary. Stage 1 trains with the backbone frozen (feature extraction); stage 2, when asked
for, unfreezes the top K backbone layers and continues at a lower learning rate (fine-tuning).

With a frozen backbone and no augmentation, the backbone's pooled features are computed once per (model,
input size, weights, interpolation) and kept on disk; the head trains on them in seconds and its weights are
the full model's head weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fashion_lib import augment, config, data, evaluate, models, runs

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
INPUT_SCALINGS = ("raw", "divide_by_255")

FIELD_HELP = {
    "input_size": "transfer models: the size the 28×28 input is resized to inside the model (32–224)",
    "weights": "transfer models: 'imagenet', 'none' (random initialisation) or a weights file path",
    "subset": "balanced training subset size (0 = all 60,000), split again into train/validation",
    "val_fraction": "share of the training images held out for validation (stratified)",
    "test_subset": "balanced test subset for quick runs (0 = all 10,000)",
    "lr_schedule": "plateau: reduce on validation-loss plateau; cosine: cosine decay; constant",
    "fine_tune": "stage 2: unfreeze the top layers of the backbone and continue at a lower learning rate",
    "fine_tune_layers": "how many top backbone layers to unfreeze (BatchNormalization stays frozen)",
    "label_smoothing": "share of each target spread evenly over all classes (0 = plain cross-entropy)",
    "temperature_scaling": "after training, fit one temperature on the validation split and fold it into "
    "the output layer, so confidences match accuracy (predicted classes unchanged)",
    "compute_dtype": "float32, or bfloat16: mixed precision with float32 weights, faster on CPUs with "
    "AVX512-BF16/AMX (the saved model computes in float32)",
    "early_stopping_patience": "epochs without validation-loss improvement before stopping (0 = off)",
    "feature_cache": "frozen backbone, no augmentation: train the head on cached backbone features",
    "input_scaling": "raw (correct: models scale inside) or divide_by_255 (reproduces the prototype's bug)",
}
FEATURE_BATCH = 256  # images per inference call at 96 px; fewer at larger sizes (see inference_batch)


def inference_batch(input_size: int) -> int:
    """Images per eager inference call: 256 at 96 px and below, scaled down with the pixel count (a Keras
    functional call keeps every layer's output of the batch alive: 256 images at 224 px took over 16 GB)."""
    return int(max(16, min(FEATURE_BATCH, FEATURE_BATCH * (96 / max(96, input_size)) ** 2)))


PROGRESS_INTERVAL_S = 0.5
PIPELINE_THREADS = 2  # parallel calls per tf.data map (the training machine has 2 cores)
PREFETCH_BATCHES = 2


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. The UI form, the CLI flags and the tuner all produce this."""

    model: str = models.BASELINE
    input_size: int = models.DEFAULT_INPUT_SIZE  # transfer models only; the baseline reads 28×28
    weights: str = "none"  # "imagenet", "none" (random initialisation) or a weights file path
    interpolation: str = "bilinear"
    subset: int = 0  # balanced training subset size; 0 = all 60,000
    val_fraction: float = 0.1
    test_subset: int = 0  # balanced test subset for quick runs; 0 = all 10,000
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    lr_schedule: str = "plateau"  # "plateau" (reduce on plateau), "cosine" or "constant"
    augment: augment.AugmentConfig = field(default_factory=augment.AugmentConfig)
    fine_tune: bool = False
    fine_tune_layers: int = 30
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 1e-4
    label_smoothing: float = 0.0  # 0.1 moves 10 % of each target's weight evenly onto all classes
    compute_dtype: str = "float32"  # "bfloat16": mixed precision while training
    temperature_scaling: bool = True  # calibrate the output on the validation split after training
    early_stopping_patience: int = 3  # epochs without val-loss improvement; 0 = off
    feature_cache: bool = True
    input_scaling: str = "raw"  # "divide_by_255" reproduces the original prototype's bug (pitfall lab)
    seed: int = 42

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", augment.AugmentConfig.from_dict(self.augment))
        problems = []
        if self.model not in models.MODEL_NAMES:
            problems.append(f"model must be one of {', '.join(models.MODEL_NAMES)}, got '{self.model}'")
        if not models.MIN_INPUT_SIZE <= self.input_size <= models.MAX_INPUT_SIZE:
            problems.append(
                f"input size must be {models.MIN_INPUT_SIZE}–{models.MAX_INPUT_SIZE}, got {self.input_size}"
            )
        if self.interpolation not in models.INTERPOLATIONS:
            problems.append(f"interpolation must be one of {', '.join(models.INTERPOLATIONS)}")
        if not (self.subset == 0 or 20 <= self.subset <= 60000):
            problems.append(f"subset must be 0 (all) or 20–60000 images, got {self.subset}")
        if not (self.test_subset == 0 or 10 <= self.test_subset <= 10000):
            problems.append(f"test subset must be 0 (all) or 10–10000 images, got {self.test_subset}")
        if not 0.01 <= self.val_fraction <= 0.5:
            problems.append(f"validation fraction must be 0.01–0.5, got {self.val_fraction}")
        if self.epochs < 1 or (self.fine_tune and self.fine_tune_epochs < 1):
            problems.append("epochs must be at least 1")
        if not 1 <= self.batch_size <= 4096:
            problems.append(f"batch size must be 1–4096, got {self.batch_size}")
        if not (0 < self.learning_rate <= 1 and 0 < self.fine_tune_learning_rate <= 1):
            problems.append("learning rates must be in (0, 1]")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.compute_dtype not in models.COMPUTE_DTYPES:
            problems.append(f"compute dtype must be one of {', '.join(models.COMPUTE_DTYPES)}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.input_scaling not in INPUT_SCALINGS:
            problems.append(f"input_scaling must be one of {', '.join(INPUT_SCALINGS)}")
        if self.lr_schedule not in ("plateau", "cosine", "constant"):
            problems.append("lr_schedule must be plateau, cosine or constant")
        if self.fine_tune and self.model == models.BASELINE:
            problems.append("fine-tuning applies to the transfer models, not the baseline")
        if self.fine_tune and self.fine_tune_layers < 1:
            problems.append("fine-tuning needs at least 1 layer to unfreeze")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    # -- JSON round-trip
    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["augment"] = self.augment.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return config.dataclass_from_dict(cls, values, "training settings")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))

    # -- derived
    @property
    def is_transfer(self) -> bool:
        return self.model in models.TRANSFER_MODELS

    @property
    def pixel_scale(self) -> float:
        """What the pipeline multiplies raw pixels by before the model: 1, or 1/255 for the bug."""
        return 1.0 / 255.0 if self.input_scaling == "divide_by_255" else 1.0

    @property
    def model_input_size(self) -> int:
        return self.input_size if self.is_transfer else config.IMAGE_SIZE

    def uses_feature_cache(self) -> bool:
        return self.is_transfer and self.feature_cache and self.augment.is_identity

    def run_tag(self, weights_label: str) -> str:
        parts = []
        if self.is_transfer:
            parts.append(f"{self.input_size}px")
            parts.append(
                "imagenet"
                if weights_label.startswith("ImageNet")
                else ("random-init" if weights_label == models.NO_WEIGHTS_LABEL else "custom-weights")
            )
        if self.input_scaling == "divide_by_255":
            parts.append("div255")
        if self.fine_tune:
            parts.append("ft")
        if self.compute_dtype == "bfloat16":
            parts.append("bf16")
        return "-".join(parts)


class StopRequested(Exception):
    """Raised inside feature extraction when the user asks the run to stop."""


# ------------------------------------------------------------------------------------------------ data


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_index: np.ndarray  # positions in the full training set
    val_index: np.ndarray
    test_index: np.ndarray
    x_train_full: np.ndarray  # all 60,000 training images (a view), which the feature cache indexes

    def checksum(self) -> str:
        digest = hashlib.sha256()
        for part in (self.train_index, self.val_index, self.test_index):
            digest.update(np.asarray(part, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]


def make_splits(cfg: TrainConfig, ds: data.FashionMNIST) -> Splits:
    """Balanced subset (if asked) → stratified train/validation split; balanced test subset (if asked)."""
    pool = (
        data.stratified_subset(ds.y_train, cfg.subset, cfg.seed) if cfg.subset else np.arange(len(ds.y_train))
    )
    train_pos, val_pos = data.stratified_split(ds.y_train[pool], cfg.val_fraction, cfg.seed)
    train_index, val_index = pool[train_pos], pool[val_pos]
    test_index = (
        data.stratified_subset(ds.y_test, cfg.test_subset, cfg.seed)
        if cfg.test_subset
        else np.arange(len(ds.y_test))
    )

    def images(x: np.ndarray, index: np.ndarray) -> np.ndarray:
        return x[index][..., None]  # (N, 28, 28, 1) uint8: the models' input contract

    return Splits(
        images(ds.x_train, train_index),
        ds.y_train[train_index],
        images(ds.x_train, val_index),
        ds.y_train[val_index],
        images(ds.x_test, test_index),
        ds.y_test[test_index],
        train_index,
        val_index,
        test_index,
        ds.x_train[..., None],
    )


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    shuffle_seed: int | None = None,
    aug: augment.AugmentConfig | None = None,
    scale: float = 1.0,
):
    """A tf.data pipeline of raw uint8 images → float32 batches (augmented when asked, then multiplied by
    ``scale``, which is 1 except in the pitfall lab), prefetched.

    Resizing to the model's input size happens inside the model, batch by batch, so memory stays bounded at
    any input size."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(
        lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=PIPELINE_THREADS
    )
    layers = augment.build_layers(aug) if aug is not None else []
    if layers:

        def apply(a, b):
            for layer in layers:
                a = layer(a, training=True)
            return tf.clip_by_value(a, 0.0, 255.0), b

        ds = ds.map(apply, num_parallel_calls=PIPELINE_THREADS)
    if scale != 1.0:
        ds = ds.map(lambda a, b: (a * scale, b), num_parallel_calls=PIPELINE_THREADS)
    return without_autotune(ds.prefetch(PREFETCH_BATCHES))


def without_autotune(ds):
    """tf.data's autotuner off, fixed parallelism and prefetch instead.

    Measured on the 2-core machine: with the autotuner on, the first step of about half the epochs waited
    15–20 s with the process idle (0.2 CPU-seconds in 15 s; inside TensorFlow, not in Python), a fifth of a
    10-epoch baseline run; with it off, no stall in three 4-epoch runs and steps no slower within this
    machine's noise. Which thread it waits for was not pinned down."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


# ------------------------------------------------------------------------------------------- callbacks


def _callbacks():
    import keras

    class RunLogger(keras.callbacks.Callback):
        """Appends one metrics row per epoch, writes in-epoch progress, and stops on request."""

        def __init__(self, folder: Path, stage: int, epochs_total: int, batches: int):
            super().__init__()
            self.folder, self.stage, self.epochs_total, self.batches = folder, stage, epochs_total, batches
            self.stopped = False
            self._last_write = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.epoch_started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if runs.stop_requested(self.folder):
                self.stopped = True
                self.model.stop_training = True
            now = time.perf_counter()
            if now - self._last_write >= PROGRESS_INTERVAL_S or batch + 1 == self.batches:
                self._last_write = now
                runs.write_json(
                    self.folder / runs.PROGRESS_FILE,
                    {
                        "stage": self.stage,
                        "phase": "training",
                        "epoch": self.epoch + 1,
                        "epochs": self.epochs_total,
                        "batch": batch + 1,
                        "batches": self.batches,
                        "epoch_elapsed": now - self.epoch_started,
                        "time": time.time(),
                    },
                )

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {
                "stage": self.stage,
                "epoch": epoch + 1,
                "seconds": time.perf_counter() - self.epoch_started,
                "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            }
            row.update({k: float(v) for k, v in logs.items() if k != "learning_rate"})
            runs.append_metrics(self.folder, row)

    return RunLogger


def _optimizer(name: str, learning_rate):
    import keras

    return {
        "adam": lambda: keras.optimizers.Adam(learning_rate),
        "adamw": lambda: keras.optimizers.AdamW(learning_rate),
        "sgd": lambda: keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True),
        "rmsprop": lambda: keras.optimizers.RMSprop(learning_rate),
    }[name]()


def _learning_rate(cfg: TrainConfig, base: float, epochs: int, steps_per_epoch: int):
    import keras

    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(base, max(1, epochs * steps_per_epoch))
    return base


def _fit(
    model,
    cfg: TrainConfig,
    folder: Path,
    stage: int,
    train_data,
    val_data,
    epochs: int,
    initial_epoch: int,
    learning_rate: float,
    steps: int,
    extra_callbacks=(),
):
    """Compile and fit one stage with the run's callbacks; returns (history, stopped)."""
    import keras

    schedule = _learning_rate(cfg, learning_rate, epochs - initial_epoch, steps)
    if cfg.label_smoothing:
        # Keras smooths one-hot targets only: the pipelines carry class indices, turned one-hot here.
        import tensorflow as tf

        def one_hot(x, y):
            return x, tf.one_hot(tf.cast(y, tf.int32), config.NUM_CLASSES)

        train_data, val_data = train_data.map(one_hot), val_data.map(one_hot)
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss, accuracy = "sparse_categorical_crossentropy", "accuracy"
    model.compile(optimizer=_optimizer(cfg.optimizer, schedule), loss=loss, metrics=[accuracy])
    logger = _callbacks()(folder, stage, epochs, steps)
    backup = folder / runs.BACKUP_DIR / f"stage{stage}"
    callbacks = [keras.callbacks.BackupAndRestore(str(backup)), logger]
    if cfg.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=cfg.early_stopping_patience, restore_best_weights=True
            )
        )
    if cfg.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.3, patience=1, min_lr=learning_rate / 100
            )
        )
    callbacks.append(
        keras.callbacks.ModelCheckpoint(
            str(folder / f"best_stage{stage}.weights.h5"),
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
        )
    )
    callbacks.extend(extra_callbacks)
    resumed_epoch = _backup_epoch(backup)
    if resumed_epoch is not None:
        runs.keep_metrics_before(folder, stage, resumed_epoch + 1)
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
    return history, logger.stopped


def _fit_on_images(
    model,
    cfg: TrainConfig,
    folder: Path,
    splits: Splits,
    stage: int,
    epochs: int,
    initial_epoch: int,
    learning_rate: float,
    extra_callbacks=(),
):
    """One stage trained end to end on images through tf.data (augmented, scaled as the config says)."""
    train_data = make_dataset(
        splits.x_train, splits.y_train, cfg.batch_size, cfg.seed, cfg.augment, cfg.pixel_scale
    )
    val_data = make_dataset(splits.x_val, splits.y_val, cfg.batch_size, scale=cfg.pixel_scale)
    steps = int(np.ceil(len(splits.x_train) / cfg.batch_size))
    return _fit(
        model,
        cfg,
        folder,
        stage,
        train_data,
        val_data,
        epochs,
        initial_epoch,
        learning_rate,
        steps,
        extra_callbacks,
    )


def _backup_epoch(backup: Path) -> int | None:
    meta = runs.read_json(backup / "training_metadata.json")
    return int(meta["epoch"]) if meta and "epoch" in meta else None


# -------------------------------------------------------------------------------------- feature cache


def feature_cache_key(cfg: TrainConfig, weights: models.ResolvedWeights) -> str:
    import keras

    weights_id = "none"
    if weights.path is not None:
        weights_id = hashlib.md5(weights.path.read_bytes()).hexdigest()
    elif weights.keras_arg == "imagenet":
        weights_id = "keras-imagenet"
    parts = (
        cfg.model,
        cfg.input_size,
        cfg.interpolation,
        weights_id,
        data.DATA_FINGERPRINT,
        keras.__version__,
        cfg.input_scaling,
    )
    text = "|".join(map(str, parts))
    if weights.keras_arg is None:
        text += f"|seed{cfg.seed}"  # random weights depend on the seed
    if cfg.compute_dtype != "float32":
        text += f"|{cfg.compute_dtype}"  # features computed in bfloat16 differ slightly
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class FeatureCache:
    """Pooled backbone features of the 60,000 training images, computed on demand and kept on disk."""

    def __init__(self, folder: Path, dim: int, n: int = 60000):
        folder.mkdir(parents=True, exist_ok=True)
        self.path, self.done_path = folder / "train.npy", folder / "train_done.npy"
        if not self.path.exists() or not self.done_path.exists():
            np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=(n, dim)).flush()
            np.save(self.done_path, np.zeros(n, dtype=bool))
        self.features = np.load(self.path, mmap_mode="r+")
        self.done = np.load(self.done_path)

    def get(
        self,
        index: np.ndarray,
        images: np.ndarray,
        extractor,
        on_batch=None,
        scale: float = 1.0,
        step: int = FEATURE_BATCH,
    ) -> np.ndarray:
        """Features for ``index`` (positions in the full training set), computing the missing ones."""
        missing = index[~self.done[index]]
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            batch = images[chunk].astype(np.float32) * scale
            self.features[chunk] = np.asarray(extractor(batch, training=False))
            self.done[chunk] = True
            if on_batch is not None:
                on_batch(start + len(chunk), len(missing))
        if len(missing):
            self.features.flush()
            np.save(self.done_path, self.done)
        return np.asarray(self.features[index])


def _train_head_on_features(
    model,
    cfg: TrainConfig,
    folder: Path,
    splits: Splits,
    weights: models.ResolvedWeights,
    timings: dict[str, float],
):
    """Stage 1 on cached features; returns (history, stopped)."""
    extractor = models.feature_extractor(model)
    cache = FeatureCache(
        config.cache_dir() / "features" / feature_cache_key(cfg, weights), int(extractor.output.shape[-1])
    )

    phase_started = {}

    def progress(done: int, total: int, split: str):
        if runs.stop_requested(folder):
            raise StopRequested
        phase_started.setdefault(split, time.time())
        runs.write_json(
            folder / runs.PROGRESS_FILE,
            {
                "stage": 1,
                "phase": f"extracting {split} features",
                "batch": done,
                "batches": total,
                "phase_started": phase_started[split],
                "time": time.time(),
            },
        )

    started = time.perf_counter()
    f_train = cache.get(
        splits.train_index,
        splits.x_train_full,
        extractor,
        lambda d, t: progress(d, t, "train"),
        cfg.pixel_scale,
        inference_batch(cfg.input_size),
    )
    f_val = cache.get(
        splits.val_index,
        splits.x_train_full,
        extractor,
        lambda d, t: progress(d, t, "validation"),
        cfg.pixel_scale,
        inference_batch(cfg.input_size),
    )
    timings["feature_extraction_seconds"] = time.perf_counter() - started
    head = models.head_model(model)
    steps = int(np.ceil(len(f_train) / cfg.batch_size))
    started = time.perf_counter()
    import tensorflow as tf

    train_data = (
        tf.data.Dataset.from_tensor_slices((f_train, splits.y_train))
        .shuffle(len(f_train), seed=cfg.seed)
        .batch(cfg.batch_size)
        .prefetch(PREFETCH_BATCHES)
    )
    train_data = without_autotune(train_data)
    val_data = without_autotune(
        tf.data.Dataset.from_tensor_slices((f_val, splits.y_val)).batch(cfg.batch_size)
    )
    result = _fit(head, cfg, folder, 1, train_data, val_data, cfg.epochs, 0, cfg.learning_rate, steps)
    timings["head_training_seconds"] = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------------------------ the engine


def _save_model_atomically(model, folder: Path) -> Path:
    target = folder / runs.MODEL_FILE
    tmp = folder / ".model.tmp.keras"
    model.save(tmp)
    tmp.replace(target)
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


def predict(model, images: np.ndarray, batch_size: int = 256, scale: float = 1.0) -> np.ndarray:
    out = [
        np.asarray(model(images[i : i + batch_size].astype(np.float32) * scale, training=False))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)


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


def _install_sigterm_handler(folder: Path) -> None:
    """SIGTERM (the stop button, `kill`) becomes a graceful stop request."""

    def handler(signum, frame):
        runs.request_stop(folder)

    # Outside the main thread (a test runner thread) signals cannot be caught; the STOP file still works.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, handler)


def start_run(cfg: TrainConfig, runs_root: Path | None = None) -> Path:
    """Create the run folder for ``cfg`` (status 'queued') without training."""
    weights = models.resolve_weights(cfg.model, cfg.weights)
    return runs.create_run(cfg.to_dict(), runs.new_run_id(cfg.model, cfg.run_tag(weights.label)), runs_root)


def train(cfg: TrainConfig | None = None, run_dir: Path | None = None, extra_callbacks=()) -> Path:
    """Train ``cfg`` into a new run folder, or continue the run in ``run_dir`` (config read from it).

    Returns the run folder. An interrupted run given again as ``run_dir`` resumes from its last finished
    epoch. A stop request (``runs.request_stop`` or SIGTERM) ends the run with the model saved and status
    'stopped'. Any error sets status 'failed' with the error text, then propagates.
    """
    if run_dir is None:
        if cfg is None:
            raise ValueError("train() needs a config or an existing run folder")
        run_dir = start_run(cfg)
    else:
        cfg = TrainConfig.from_dict(runs.read_json(run_dir / runs.CONFIG_FILE) or {})
    _install_sigterm_handler(run_dir)
    runs.set_status(run_dir, "running", pid=os.getpid(), started=time.time(), error=None)
    try:
        state = _train_stages(cfg, run_dir, extra_callbacks)
    except BaseException as exc:
        runs.set_status(run_dir, "failed", error=f"{type(exc).__name__}: {exc}", finished=time.time())
        raise
    runs.set_status(run_dir, state, finished=time.time())
    (run_dir / runs.STOP_FILE).unlink(missing_ok=True)
    (run_dir / "stage1.weights.h5").unlink(missing_ok=True)  # only needed to resume
    return run_dir


def _train_stages(cfg: TrainConfig, folder: Path, extra_callbacks=()) -> str:
    import keras

    keras.utils.set_random_seed(cfg.seed)
    wall_started = time.perf_counter()
    ds = data.load()
    splits = make_splits(cfg, ds)
    weights = models.resolve_weights(cfg.model, cfg.weights)
    model = models.build_model(
        cfg.model, cfg.input_size, cfg.weights, cfg.interpolation, cfg.seed, cfg.compute_dtype
    )
    timings: dict[str, float] = {}
    params: dict[str, dict[str, int]] = {"stage1": models.parameter_counts(model)}
    stopped = False

    stage1_weights = folder / "stage1.weights.h5"
    if stage1_weights.exists():  # resumed after stage 1 had finished
        model.load_weights(stage1_weights)
    else:
        started = time.perf_counter()
        if cfg.uses_feature_cache():
            try:
                _, stopped = _train_head_on_features(model, cfg, folder, splits, weights, timings)
            except StopRequested:
                stopped = True
        else:
            _, stopped = _fit_on_images(
                model, cfg, folder, splits, 1, cfg.epochs, 0, cfg.learning_rate, extra_callbacks
            )
        timings["stage1_seconds"] = time.perf_counter() - started
        if not stopped:
            model.save_weights(stage1_weights)

    if cfg.fine_tune and not stopped:
        models.set_stage(model, 2, cfg.fine_tune_layers)
        params["stage2"] = models.parameter_counts(model)
        started = time.perf_counter()
        epochs_done = len([r for r in runs.read_metrics(folder) if r.get("stage") == 1])
        _, stopped = _fit_on_images(
            model,
            cfg,
            folder,
            splits,
            2,
            epochs_done + cfg.fine_tune_epochs,
            epochs_done,
            cfg.fine_tune_learning_rate,
            extra_callbacks,
        )
        timings["stage2_seconds"] = time.perf_counter() - started

    model = models.as_float32(model)  # what is saved, evaluated and explained computes in float32
    batch = inference_batch(cfg.model_input_size)
    calibration = {}
    if cfg.temperature_scaling:
        runs.write_json(
            folder / runs.PROGRESS_FILE, {"phase": "calibrating on the validation split", "time": time.time()}
        )
        started = time.perf_counter()
        calibration = calibrate(model, cfg, splits, batch)
        timings["calibration_seconds"] = time.perf_counter() - started
    runs.write_json(folder / runs.PROGRESS_FILE, {"phase": "evaluating on the test set", "time": time.time()})
    model_path = _save_model_atomically(model, folder)
    started = time.perf_counter()
    probs = predict(model, splits.x_test, batch_size=batch, scale=cfg.pixel_scale)
    timings["test_prediction_seconds"] = time.perf_counter() - started
    np.savez_compressed(
        folder / runs.PREDICTIONS_FILE,
        probabilities=probs,
        labels=splits.y_test,
        test_index=splits.test_index,
    )
    summary = {
        "model": cfg.model,
        "display_name": models.DISPLAY_NAMES[cfg.model],
        "weights": weights.label,
        "input_size": cfg.model_input_size,
        "training_images": len(splits.x_train),
        "validation_images": len(splits.x_val),
        "test_images": len(splits.x_test),
        "epochs_run": len(runs.read_metrics(folder)),
        "parameters": params,
        "feature_cache": cfg.uses_feature_cache(),
        "input_scaling": cfg.input_scaling,
        "compute_dtype": cfg.compute_dtype,
        **calibration,
        **{k: round(v, 3) for k, v in timings.items()},
        "wall_seconds": round(time.perf_counter() - wall_started, 3),
        **evaluate.classification_summary(splits.y_test, probs),
        **measure_latency(model, splits.x_test, batch=batch),
        "model_size_bytes": model_path.stat().st_size,
        "library_versions": library_versions(),
        "data_fingerprint": data.DATA_FINGERPRINT,
        "split_checksum": splits.checksum(),
        "stopped_early_by_user": stopped,
    }
    runs.write_json(folder / runs.SUMMARY_FILE, summary)
    runs.write_json(folder / runs.PROGRESS_FILE, {"phase": "done", "time": time.time()})
    return "stopped" if stopped else "completed"


CALIBRATION_IMAGES = 2000  # validation images the temperature is fitted on (one number needs few)


def calibrate(model, cfg: TrainConfig, splits: Splits, batch: int) -> dict[str, float]:
    """Temperature scaling: fit T on (up to CALIBRATION_IMAGES of) the validation split and fold it into the
    model's output layer. Returns T and the validation ECE before and after."""
    n = len(splits.x_val)
    pick = np.sort(np.random.default_rng(cfg.seed).permutation(n)[: min(n, CALIBRATION_IMAGES)])
    labels = splits.y_val[pick]
    probs = predict(model, splits.x_val[pick], batch_size=batch, scale=cfg.pixel_scale)
    temperature = evaluate.fit_temperature(probs, labels)
    models.fold_temperature(model, temperature)
    return {
        "temperature": round(temperature, 4),
        "calibration_images": len(pick),
        "validation_ece_before": round(evaluate.calibration_error(probs, labels), 4),
        "validation_ece_after": round(
            evaluate.calibration_error(evaluate.temperature_scaled(probs, temperature), labels), 4
        ),
    }


# --------------------------------------------------------------------------------------- time estimate

# Forward throughput (images/s, batch 64) measured on the project's 2-core CPU machines, by input size.
FORWARD_SPEED = {
    models.EFFICIENTNET_B0: {32: 1385, 64: 672, 96: 379, 128: 121, 224: 41},
    models.MOBILENET_V2: {32: 2105, 64: 1020, 96: 421, 128: 320, 224: 94},
}
# Images/s training the baseline CNN (batch 128) on the same machines, by compute dtype: median step
# times of 64 and 57 ms on a quiet machine (the same machine was up to 40 % slower at other hours).
BASELINE_TRAIN_SPEED = {"float32": 2000, "bfloat16": 2250}
FINE_TUNE_SLOWDOWN = 2.5  # fine-tuning runs the backbone forward and part of it backward


def forward_speed(model: str, size: int) -> float:
    table = FORWARD_SPEED[model]
    sizes = sorted(table)
    return float(np.exp(np.interp(np.log(size), np.log(sizes), np.log([table[s] for s in sizes]))))


def estimate_seconds(cfg: TrainConfig, feature_cache_ready: bool = False) -> dict[str, float]:
    """Rough seconds per stage on a 2-core CPU like the development machine (all epochs, no early stop)."""
    n_pool = cfg.subset or 60000
    n_train = round(n_pool * (1 - cfg.val_fraction))
    n_test = cfg.test_subset or 10000
    if not cfg.is_transfer:
        speed = BASELINE_TRAIN_SPEED[cfg.compute_dtype]
        return {"training": cfg.epochs * n_pool / speed, "test predictions": n_test / 20000}
    speed = forward_speed(cfg.model, cfg.input_size)
    out = {}
    if cfg.uses_feature_cache():
        out["feature extraction"] = 0.0 if feature_cache_ready else n_pool / speed
        out["head training"] = cfg.epochs * n_pool / 50000
    else:
        out["stage 1 (frozen backbone)"] = cfg.epochs * n_pool / speed * 1.2
    if cfg.fine_tune:
        out["stage 2 (fine-tuning)"] = (
            cfg.fine_tune_epochs * (n_train * FINE_TUNE_SLOWDOWN + n_pool - n_train) / speed
        )
    if cfg.temperature_scaling:
        out["calibration"] = min(n_pool - n_train, CALIBRATION_IMAGES) / speed
    out["test predictions"] = n_test / speed
    return out


# Peak resident memory (GiB) of fine-tuning at 224 px by batch size: EfficientNetB0 (the larger of the two
# backbones) with every layer unfrozen, the worst case, measured on the 24 GB development machine (`python -m
# bench.transfer --memory-only --fine-tune-layers 300`). Memory grows with the batch and the pixel count;
# TensorFlow, the data and the weights stay. (With the top 30 layers unfrozen the peak stayed at 6.0 GiB
# from batch 16 to 128.)
MEMORY_AT_224 = {32: 6.3, 128: 10.3}
MEMORY_SHARE = 0.6  # warn when the estimate passes this share of the machine's memory


def machine_memory_gb() -> float:
    """This machine's memory, or the container's limit when that is lower."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            limits.append(int(Path(path).read_text().strip()))
    return min(limits) / 2**30


def _memory_model() -> tuple[float, float]:
    """(fixed GB, GB per image at 224 px) from the two measurements."""
    (b1, m1), (b2, m2) = sorted(MEMORY_AT_224.items())
    per_image = (m2 - m1) / (b2 - b1)
    return m1 - b1 * per_image, per_image


def memory_estimate_gb(cfg: TrainConfig) -> float | None:
    """Estimated peak memory of transfer models trained on images (None when no backbone trains on images)."""
    if not cfg.is_transfer or (cfg.uses_feature_cache() and not cfg.fine_tune):
        return None
    fixed, per_image = _memory_model()
    return fixed + per_image * cfg.batch_size * (cfg.input_size / 224) ** 2


def memory_warning(cfg: TrainConfig) -> str | None:
    estimate = memory_estimate_gb(cfg)
    if estimate is None:
        return None
    available = machine_memory_gb()
    limit = MEMORY_SHARE * available
    if estimate < limit:
        return None
    fixed, per_image = _memory_model()
    safe = int((limit - fixed) / (per_image * (cfg.input_size / 224) ** 2))
    advice = (
        f"Use a batch of {safe // 8 * 8 if safe >= 8 else safe} or less, or a smaller input size."
        if safe >= 1
        else "Use a smaller input size."
    )
    return (
        f"At {cfg.input_size} px with batch {cfg.batch_size} this training needs roughly {estimate:.0f} GB; "
        f"this machine has {available:.0f} GB and the system may stop the run for lack of memory. {advice}"
    )
