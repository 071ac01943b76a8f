"""Splits and tf.data pipelines: balanced subsets, stratified train/validation, batches of raw pixels,
and batched inference."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fashion_lib import augment, data
from fashion_lib.training.config import TrainConfig

PIPELINE_THREADS = 2  # parallel calls per tf.data map (the training machine has 2 cores)
PREFETCH_BATCHES = 2
FEATURE_BATCH = 256  # images per inference call at 96 px; fewer at larger sizes (see inference_batch)


def inference_batch(input_size: int) -> int:
    """Images per eager inference call: 256 at 96 px and below, scaled down with the pixel count (a Keras
    functional call keeps every layer's output of the batch alive: 256 images at 224 px took over 16 GB)."""
    return int(max(16, min(FEATURE_BATCH, FEATURE_BATCH * (96 / max(96, input_size)) ** 2)))


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
    x_photos: np.ndarray | None = None  # training images as converted product photos (photo_mix)
    y_photos: np.ndarray | None = None
    targets: np.ndarray | None = None  # (N, 10) soft targets of image_training_set (distillation)

    def image_training_set(self) -> tuple[np.ndarray, np.ndarray]:
        """What the image stages train on: the training split, and its product photos when there are any."""
        if self.x_photos is None or not len(self.x_photos):
            return self.x_train, self.y_train
        return np.concatenate([self.x_train, self.x_photos]), np.concatenate([self.y_train, self.y_photos])

    def image_training_targets(self) -> tuple[np.ndarray, np.ndarray]:
        """``image_training_set`` with the soft targets in place of the labels when there are any."""
        x, y = self.image_training_set()
        return (x, y) if self.targets is None else (x, self.targets)

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

        # one call at a time: the layers draw from their seed generators in batch order, so a seed gives the
        # same augmented batches again (parallel calls drew in whichever order the threads ran)
        ds = ds.map(apply, num_parallel_calls=1)
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


def predict(model, images: np.ndarray, batch_size: int = 256, scale: float = 1.0) -> np.ndarray:
    """Class probabilities (N, 10) float32 for raw images, ``batch_size`` images per call."""
    out = [
        np.asarray(model(images[i : i + batch_size].astype(np.float32) * scale, training=False))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)
