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
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fashion_lib import config, data, files, processes

# bump when the rendering (photo_render.render with shading="positive") or the conversion changes: cached
# photos are then made again
VERSION = 1
SEED_BASE = 50_000_000  # far from the seeds bench.photo_realistic renders test images with
CHUNK = 25  # photos per task: about 2.5 s, so a stop waits no longer than that
POLL_S = 0.5
SAVE_EVERY_S = 10.0  # how often the cache file is rewritten while converting


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


def convert_one(image28: np.ndarray, index: int) -> np.ndarray | None:
    """Training image number ``index`` as a converted product photo (28×28 uint8); None when the upload
    conversion refuses the photo (e.g. a white product on a white background: nothing stands out)."""
    from fashion_lib import photo_render, photos

    # drawn the first way (the product lighter where the image is light): the shipped models trained on
    # these photos, and the cache holds them; bench.photo_realistic measures on the other, realistic way
    jpeg = photo_render.render(image28, background_of(index), seed=SEED_BASE + int(index), shading="positive")
    try:
        _, conversion = photos.convert_upload(jpeg)
    except photos.PhotoError:
        return None
    return conversion.image


def _convert_chunk(images: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(photos, which converted): a refused photo is a black image marked False."""
    out = [convert_one(img, i) for img, i in zip(images, indices, strict=True)]
    ok = np.array([o is not None for o in out])
    blank = np.zeros((config.IMAGE_SIZE, config.IMAGE_SIZE), np.uint8)
    return np.stack([o if o is not None else blank for o in out]), ok


def cache_path() -> Path:
    """One file per rendering version, data, OpenCV and Pillow (either changes what a conversion gives)."""
    import cv2
    import PIL

    name = f"v{VERSION}-{data.DATA_FINGERPRINT}-cv{cv2.__version__}-pil{PIL.__version__}.npz"
    return config.fashion_home() / "cache" / "photos" / name


def read_cache(path: Path) -> dict[int, np.ndarray | None]:
    """Converted photos by training index (None: the conversion refused it); empty when the file is
    missing or damaged (made again)."""
    try:
        stored = files.read_arrays(path)
        index, images, ok = stored["index"], stored["images"], stored["ok"]
    except (ValueError, KeyError):
        return {}
    if (
        index.ndim != 1
        or index.dtype.kind not in "iu"
        or images.shape != (len(index), config.IMAGE_SIZE, config.IMAGE_SIZE)
        or images.dtype != np.uint8
        or ok.shape != index.shape
    ):
        return {}
    return {i: (img if good else None) for i, img, good in zip(index.tolist(), images, ok, strict=True)}


def _write_cache(path: Path, photos: dict[int, np.ndarray | None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # another run may have added photos since this one read the file: keep them too
    merged = {**read_cache(path), **photos}
    if not merged:
        return
    order = sorted(merged)
    blank = np.zeros((config.IMAGE_SIZE, config.IMAGE_SIZE), np.uint8)
    with files.atomic(path, suffix=".npz") as tmp:
        np.savez(
            tmp,
            index=np.array(order, np.int64),
            images=np.stack([blank if merged[i] is None else merged[i] for i in order]),
            ok=np.array([merged[i] is not None for i in order]),
        )


def converted(
    x_train_full: np.ndarray,
    index: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(photos (N, 28, 28) uint8, their training indices): the training images ``index`` as converted
    photos, from the cache, converting the missing ones; the few the conversion refuses are left out.
    ``progress(done, total)`` as chunks finish; None when ``should_stop()`` turned true first (every chunk
    finished by then is saved)."""
    path = cache_path()
    have = read_cache(path)
    missing = [int(i) for i in index if int(i) not in have]
    total, done = len(index), len(index) - len(missing)
    progress = progress or (lambda converted, total: None)
    progress(done, total)
    if missing:
        new = _convert_missing(
            x_train_full, missing, path, workers, lambda n: progress(done + n, total), should_stop
        )
        if new is None:
            return None
        have.update(new)
    kept = np.array([int(i) for i in index if have[int(i)] is not None], np.int64)
    photos = [have[int(i)] for i in kept]
    size = config.IMAGE_SIZE
    return (np.stack(photos) if photos else np.zeros((0, size, size), np.uint8)), kept


def _convert_missing(x_train_full, missing, path, workers, progress, should_stop):
    """Convert ``missing`` in worker processes; save every SAVE_EVERY_S and at the end or a stop (waiting
    for the chunks already running: a few seconds each). The new photos by index, or None when stopped."""
    workers = workers or max(1, min(os.cpu_count() or 1, len(missing) // CHUNK + 1))
    chunks = [np.array(missing[i : i + CHUNK]) for i in range(0, len(missing), CHUNK)]
    new: dict[int, np.ndarray | None] = {}
    saved_at = time.monotonic()
    with _pool(workers) as pool:
        with _empty_main():
            pending = {pool.submit(_convert_chunk, x_train_full[c], c): c for c in chunks}
        stopping = False
        while pending:
            finished, _ = concurrent.futures.wait(
                pending, timeout=POLL_S, return_when=concurrent.futures.FIRST_COMPLETED
            )
            broken = False
            for future in finished:
                chunk = pending.pop(future)
                if future.cancelled():
                    continue
                try:
                    images, ok = future.result()
                except concurrent.futures.process.BrokenProcessPool:
                    broken = True  # keep what the other finished tasks brought first
                    continue
                new.update(
                    (i, img if good else None)
                    for i, img, good in zip(chunk.tolist(), images, ok, strict=True)
                )
            if broken:
                _write_cache(path, new)
                raise RuntimeError(
                    f"a photo conversion process ended abruptly ({len(new):,} photos converted and kept): "
                    "resume the run to convert the rest"
                )
            if finished:
                progress(len(new))
            if not stopping and should_stop and should_stop():
                stopping = True
                for future in pending:
                    future.cancel()  # the running ones finish and are kept
            if time.monotonic() - saved_at > SAVE_EVERY_S:
                _write_cache(path, new)
                saved_at = time.monotonic()
    _write_cache(path, new)
    return None if stopping else new


@contextlib.contextmanager
def _pool(workers: int):
    """Worker processes that start fresh (spawn): the training process has TensorFlow's threads running,
    which a fork would copy half-way. Submit to it inside ``_empty_main``: its processes start then."""
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


@contextlib.contextmanager
def _empty_main():
    """An empty ``__main__`` while worker processes start (the pool starts them on submit). A spawned child
    re-runs its parent's main module, which under a test runner or Streamlit's AppTest can be a page script
    (it crashed the child); the workers need nothing from it."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")  # no __spec__, no __file__: nothing to re-run
    try:
        yield
    finally:
        sys.modules["__main__"] = main
