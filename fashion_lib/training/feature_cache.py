"""The feature cache: a frozen backbone's pooled features of the 60,000 training images, computed once per
(model, input size, weights, interpolation, data, Keras version, scaling) and kept under
``$FASHION_HOME/cache/features``. With a frozen backbone and no augmentation the head then trains on them in
seconds, and its weights are the full model's head weights.

Crash safety: the features file is created under a temporary name and renamed; rows are flushed before the
done-mask marks them, and the mask is replaced atomically (merged under a lock with what other processes
marked), so a torn write or a stop during extraction never marks a row that was not written, and keeps
every row that was.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from fashion_lib import config, data, files, models, runs
from fashion_lib.training.callbacks import StopRequested, StopWatch
from fashion_lib.training.config import TrainConfig
from fashion_lib.training.fitting import fit_stage
from fashion_lib.training.pipelines import (
    FEATURE_BATCH,
    PREFETCH_BATCHES,
    Splits,
    inference_batch,
    without_autotune,
)

SAVE_EVERY_S = 10.0  # how often extraction records its progress in the done-mask


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


def _save_atomically(path: Path, array: np.ndarray) -> None:
    with files.atomic(path, suffix=".npy") as tmp, tmp.open("wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())


class FeatureCache:
    """Pooled backbone features of the 60,000 training images, computed on demand and kept on disk."""

    def __init__(self, folder: Path, dim: int, n: int = 60000):
        folder.mkdir(parents=True, exist_ok=True)
        self.path, self.done_path = folder / "train.npy", folder / "train_done.npy"
        self._lock_path = folder / ".lock"
        with files.locked(self._lock_path):
            self.features = self._open_features(n, dim)
            self.done = self._read_done(n)

    def _open_features(self, n: int, dim: int) -> np.ndarray:
        try:
            features = np.load(self.path, mmap_mode="r+")
            if features.shape == (n, dim) and features.dtype == np.float32:
                return features
        except (OSError, ValueError):
            pass
        # New, or damaged: build it under a temporary name, then rename; nothing is marked done yet.
        with files.atomic(self.path, suffix=".npy") as tmp:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim)).flush()
            _save_atomically(self.done_path, np.zeros(n, dtype=bool))
        return np.load(self.path, mmap_mode="r+")

    def _read_done(self, n: int) -> np.ndarray:
        try:
            done = np.load(self.done_path)
            if done.shape == (n,) and done.dtype == bool:
                return done
        except (OSError, ValueError):
            pass
        return np.zeros(n, dtype=bool)  # unreadable: recompute rather than trust it

    def _record(self, rows: np.ndarray) -> None:
        """Mark ``rows`` done on disk once their features are flushed, merged with other processes' marks."""
        self.features.flush()
        with files.locked(self._lock_path):
            on_disk = self._read_done(len(self.done))
            on_disk[rows] = True
            _save_atomically(self.done_path, on_disk)
            self.done |= on_disk

    def get(
        self,
        index: np.ndarray,
        images: np.ndarray,
        extractor,
        on_batch=None,
        scale: float = 1.0,
        step: int = FEATURE_BATCH,
    ) -> np.ndarray:
        """Features for ``index`` (positions in the full training set), computing the missing ones.

        ``on_batch(done, total)`` is called after each batch and may raise StopRequested: what was
        extracted until then is kept."""
        missing = index[~self.done[index]]
        self.computed = len(missing)  # how many this call extracts (0: all were cached)
        unrecorded: list[np.ndarray] = []
        last_save = time.monotonic()
        try:
            for start in range(0, len(missing), step):
                chunk = missing[start : start + step]
                batch = images[chunk].astype(np.float32) * scale
                self.features[chunk] = np.asarray(extractor(batch, training=False))
                unrecorded.append(chunk)
                if time.monotonic() - last_save > SAVE_EVERY_S:
                    self._record(np.concatenate(unrecorded))
                    unrecorded, last_save = [], time.monotonic()
                if on_batch is not None:
                    on_batch(start + len(chunk), len(missing))
        finally:
            if unrecorded:
                self._record(np.concatenate(unrecorded))
        return np.asarray(self.features[index])


def train_head_on_features(
    model,
    cfg: TrainConfig,
    folder: Path,
    splits: Splits,
    weights: models.ResolvedWeights,
    timings: dict[str, float],
    watch: StopWatch,
    extra_callbacks=(),
):
    """Stage 1 on cached features; returns (history, stopped)."""
    extractor = models.feature_extractor(model)
    cache = FeatureCache(
        config.cache_dir() / "features" / feature_cache_key(cfg, weights), int(extractor.output.shape[-1])
    )
    phase_started: dict[str, float] = {}

    def progress(done: int, total: int, split: str):
        if watch.requested():
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
    features, extracted = {}, 0
    for split, index in (("train", splits.train_index), ("validation", splits.val_index)):
        features[split] = cache.get(
            index,
            splits.x_train_full,
            extractor,
            lambda d, t, s=split: progress(d, t, s),
            cfg.pixel_scale,
            inference_batch(cfg.input_size),
        )
        extracted += cache.computed
    timings["feature_extraction_seconds"] = time.perf_counter() - started
    timings["features_extracted"] = extracted
    head = models.head_model(model)
    steps = int(np.ceil(len(features["train"]) / cfg.batch_size))
    started = time.perf_counter()
    import tensorflow as tf

    train_data = without_autotune(
        tf.data.Dataset.from_tensor_slices((features["train"], splits.y_train))
        .shuffle(len(features["train"]), seed=cfg.seed)
        .batch(cfg.batch_size)
        .prefetch(PREFETCH_BATCHES)
    )
    val_data = without_autotune(
        tf.data.Dataset.from_tensor_slices((features["validation"], splits.y_val)).batch(cfg.batch_size)
    )
    result = fit_stage(
        head,
        cfg,
        folder,
        1,
        train_data,
        val_data,
        cfg.epochs,
        0,
        cfg.learning_rate,
        steps,
        watch,
        extra_callbacks,
    )
    timings["head_training_seconds"] = time.perf_counter() - started
    return result
