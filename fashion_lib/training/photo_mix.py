"""Training images shown as product photos: some training-split images are rendered as photos
(``photo_render``: colour, texture, rotation, perspective, shadow, a white, plain, gradient or busy
background), converted back by the upload page's own ``photos.convert_upload``, and added to the training
images — so a model learns what an uploaded photo looks like after the conversion. Only images of the
training split are used: validation and test images are never rendered.

A training image always becomes the same photo (its seed and background follow from its index), so the
converted photos are kept under ``$FASHION_HOME/cache/photos`` and each is converted once. Conversion takes
about 0.1 s a photo; it runs in one process per core (ended with the run, even by SIGKILL), in chunks, and
every finished chunk is saved: a stopped or killed run keeps what it converted.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fashion_lib import config, data, files, processes

VERSION = 1  # bump when the rendering or the conversion changes: cached photos are then made again
SEED_BASE = 50_000_000  # far from the seeds bench.photo_realistic renders test images with
CHUNK = 250


def choose(y_train: np.ndarray, train_index: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` positions in the full training set, drawn class-balanced from the training split
    (``train_index``, labels ``y_train``); all of them when ``count`` is larger."""
    if count >= len(train_index):
        return np.sort(train_index)
    picked = data.stratified_subset(y_train, count, seed + 1)
    return np.sort(train_index[picked])


def background_of(index: int) -> str:
    from fashion_lib import photo_render

    return photo_render.BACKGROUNDS[index % len(photo_render.BACKGROUNDS)]


def convert_one(image28: np.ndarray, index: int) -> np.ndarray:
    """Training image number ``index`` as a converted product photo (28×28 uint8)."""
    from fashion_lib import photo_render, photos

    jpeg = photo_render.render(image28, background_of(index), seed=SEED_BASE + int(index))
    _, conversion = photos.convert_upload(jpeg)
    return conversion.image


def _convert_chunk(images: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return np.stack([convert_one(img, i) for img, i in zip(images, indices, strict=True)])


def cache_path() -> Path:
    return config.fashion_home() / "cache" / "photos" / f"v{VERSION}-{data.DATA_FINGERPRINT}.npz"


def read_cache(path: Path) -> dict[int, np.ndarray]:
    """Converted photos by training index; empty when the file is missing or damaged (made again)."""
    try:
        with np.load(path) as stored:
            index, images = stored["index"], stored["images"]
        if images.shape != (len(index), config.IMAGE_SIZE, config.IMAGE_SIZE) or images.dtype != np.uint8:
            return {}
        return dict(zip(index.tolist(), images, strict=True))
    except (OSError, ValueError, KeyError, EOFError):
        return {}


def _write_cache(path: Path, photos: dict[int, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # another run may have added photos since this one read the file: keep them too
    merged = {**read_cache(path), **photos}
    order = sorted(merged)
    with files.atomic(path, suffix=".npz") as tmp:
        np.savez(tmp, index=np.array(order, np.int64), images=np.stack([merged[i] for i in order]))


def converted(
    x_train_full: np.ndarray,
    index: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    workers: int | None = None,
) -> np.ndarray | None:
    """The converted photos of training images ``index`` (N, 28, 28) uint8, from the cache, converting the
    missing ones. ``progress(done, total)`` after each chunk; None when ``should_stop()`` turned true first
    (the chunks finished so far are saved)."""
    path = cache_path()
    have = read_cache(path)
    missing = [int(i) for i in index if int(i) not in have]
    total, done = len(index), len(index) - len(missing)
    if progress:
        progress(done, total)
    if missing:
        workers = workers or max(1, min(os.cpu_count() or 1, len(missing) // CHUNK + 1))
        chunks = [np.array(missing[i : i + CHUNK]) for i in range(0, len(missing), CHUNK)]
        with _pool(workers) as pool:
            pending = {pool.submit(_convert_chunk, x_train_full[c], c): c for c in chunks}
            new: dict[int, np.ndarray] = {}
            try:
                for future in concurrent.futures.as_completed(pending):
                    chunk = pending[future]
                    try:
                        result = future.result()
                    except concurrent.futures.process.BrokenProcessPool:
                        raise RuntimeError(
                            f"a photo conversion process ended abruptly ({done:,} of {total:,} photos "
                            "converted and kept): resume the run to convert the rest"
                        ) from None
                    new.update(zip(chunk.tolist(), result, strict=True))
                    done += len(chunk)
                    _write_cache(path, new)
                    if progress:
                        progress(done, total)
                    if should_stop and should_stop():
                        for other in pending:
                            other.cancel()
                        return None
            finally:
                have.update(new)
    return np.stack([have[int(i)] for i in index]) if len(index) else np.zeros((0, 28, 28), np.uint8)


@contextlib.contextmanager
def _pool(workers: int):
    """Worker processes that start fresh (spawn): the training process has TensorFlow's threads running,
    which a fork would copy half-way."""
    pool = concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=processes.die_with_parent,
        initargs=(signal.SIGKILL,),  # nothing to save: a converted chunk is saved by this process
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
