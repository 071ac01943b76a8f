"""Inference for the service, without HTTP: load and warm up a model, micro-batch forward passes, turn
uploads and pixel arrays into model inputs, rank classes and draw Grad-CAM heatmaps.

An upload goes through the same validation and photo conversion as on the Grad-CAM page (``photos``), except
a 28×28 grayscale image on a dark background: that already is a Fashion-MNIST image and is used as it is.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from fashion_lib import confidence, config, evaluate, explain, models, photos, runs

MAX_PIXEL_IMAGES = 256  # images per pixel-array request
BATCH_WINDOW_MS = 2.0  # how long the first request of a batch waits for others to join it
MAX_BATCH = 64
AS_IS = "used as it is: a 28×28 grayscale image, light on dark (Fashion-MNIST's own form)"
SIZE = config.IMAGE_SIZE


class BadInput(ValueError):
    """Input the model cannot take: a short machine-readable code, a sentence for people and, for uploads,
    what is wrong with each file."""

    def __init__(self, code: str, detail: str, files: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.code, self.detail, self.files = code, detail, files


# ------------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to answer: ``predict`` maps raw pixels (N, 28, 28, 1) float32 to rows of the ten class
    probabilities followed by the image's familiarity distance (``confidence``), in one forward pass."""

    model: Any
    predict: Callable[[np.ndarray], np.ndarray]
    familiarity: confidence.Familiarity | None  # None: none kept with the model, no Fashion-MNIST here


def split(answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, 10), familiarity distances (N,)) from ``LoadedModel.predict``'s rows."""
    return answers[:, : config.NUM_CLASSES], answers[:, config.NUM_CLASSES]


def load_warm(folder: Path) -> LoadedModel:
    """Load ``folder``'s model (safe mode), learn where its training images lie (``confidence``), compile its
    forward pass once and warm up every path a request takes (forward pass at two batch sizes, Grad-CAM, the
    photo conversion), so no request pays for it."""
    import tensorflow as tf

    model = models.load_model(folder / runs.MODEL_FILE)
    # kept beside the model (shipped, exported) or in the cache, else made where Fashion-MNIST is found;
    # None (verdicts without the familiarity sign) where neither is at hand
    stats = confidence.of_model(model, folder / runs.MODEL_FILE)
    both = confidence.with_features(model, stats.layer if stats else None)
    forward = tf.function(
        lambda x: both(x, training=False),
        input_signature=[tf.TensorSpec((None, SIZE, SIZE, 1), tf.float32)],
    )

    def predict(images: np.ndarray) -> np.ndarray:
        features, probabilities = (t.numpy() for t in forward(images))
        distances = stats.distances(features) if stats else np.full(len(features), np.nan)
        return np.concatenate([probabilities, distances[:, None]], axis=1)

    for n in (1, MAX_BATCH):
        predict(np.zeros((n, SIZE, SIZE, 1), np.float32))
    for n in (1, 2):  # Grad-CAM's function generalises its batch size after two different ones
        explain.gradcam(model, np.zeros((n, SIZE, SIZE, 1), np.float32))
    photo = np.full((64, 48, 3), 255, np.uint8)
    photo[16:48, 12:36] = 40
    photos.to_fashion_mnist(photos.Photo(photo))
    return LoadedModel(model, predict, stats)


class MicroBatcher:
    """Gathers the images of concurrent requests into one forward pass: the first request of a batch
    waits ``window_ms`` for others (up to ``max_batch`` images), then one call in a worker thread answers
    them all. While a pass runs, new requests queue up and form the next batch."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], window_ms: float, max_batch: int) -> None:
        self.predict = predict
        self.window_s = window_ms / 1000
        self.max_batch = max_batch
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()

    async def __call__(self, images: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, future))
        return await future

    async def run(self) -> None:
        limiter = anyio.CapacityLimiter(1)  # its own worker thread: photo conversions never hold it up
        while True:
            batch = [await self.queue.get()]
            if self.window_s > 0:
                await asyncio.sleep(self.window_s)
            size = len(batch[0][0])
            while size < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
                size += len(batch[-1][0])
            try:
                images = np.concatenate([b[0] for b in batch])
                probabilities = await anyio.to_thread.run_sync(self.predict, images, limiter=limiter)
            except Exception as exc:  # the callers' requests fail with it; the loop keeps serving
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for images, future in batch:
                if not future.done():  # a caller that went away has a cancelled future
                    future.set_result(probabilities[start : start + len(images)])
                start += len(images)


# -------------------------------------------------------------------------------------------- inputs


def model_input(data: bytes) -> tuple[photos.Conversion, str]:
    """One upload → its conversion (the 28×28 uint8 image the model sees), and how it was obtained. Raises
    PhotoError."""
    _, conversion = photos.convert_upload(data)
    if conversion.mask_method == photos.AS_IS:
        return conversion, AS_IS
    return conversion, f"photo conversion ({conversion.mask_method})"


def model_inputs(payloads: list[tuple[str, bytes]]) -> tuple[np.ndarray, list[str], list[photos.Conversion]]:
    """Every upload (file name, bytes) → images (N, 28, 28) uint8, how each was obtained and its conversion;
    BadInput listing every file that cannot be used, with the reason."""
    conversions, hows, problems = [], [], []
    for index, (name, data) in enumerate(payloads):
        try:
            conversion, how = model_input(data)
        except photos.PhotoError as exc:
            problems.append({"index": index, "file": name, "detail": str(exc)})
            continue
        conversions.append(conversion)
        hows.append(how)
    if problems:
        detail = "; ".join(f"file {p['index'] + 1} ({p['file']}): {p['detail']}" for p in problems)
        raise BadInput("invalid_image", detail, problems)
    return np.stack([c.image for c in conversions]), hows, conversions


MAX_PIXEL_DEPTH = 4  # [N, 28, 28, 1]


def _nesting_depth(body: bytes) -> int:
    """How deep the JSON arrays in ``body`` nest (brackets counted as bytes: fast, and a bracket inside a
    string, which no valid body has, can only make it look deeper)."""
    opened = np.frombuffer(body, np.uint8)
    steps = (opened == ord("[")).astype(np.int32) - (opened == ord("]")).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def parse_pixels(body: bytes) -> np.ndarray:
    """A JSON array of 28×28 images (or one 28×28 image) of numbers 0–255 → (N, 28, 28) float32; BadInput
    saying what is wrong otherwise."""
    expected = f"expected a JSON array of {SIZE}×{SIZE} images of numbers 0–255 (shape [N, {SIZE}, {SIZE}])"
    depth = _nesting_depth(body)
    if depth > MAX_PIXEL_DEPTH:  # before parsing: deep nesting costs recursion, and can never be valid
        raise BadInput("wrong_shape", f"arrays nested {depth} deep (at most {MAX_PIXEL_DEPTH}); {expected}")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadInput("invalid_json", f"the body is not JSON ({exc}); {expected}") from exc
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nesting
        raise BadInput("wrong_shape", f"the arrays have uneven lengths; {expected}") from exc
    # NumPy reads [true, 3] as [1, 3]: a true or false anywhere (never inside a string: no valid body has one)
    if array.dtype.kind not in "iuf" or b"true" in body or b"false" in body:
        raise BadInput("wrong_shape", f"the array holds something other than numbers; {expected}")
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (SIZE, SIZE):
        raise BadInput("wrong_shape", f"got shape {list(np.shape(value))}; {expected}")
    if len(array) > MAX_PIXEL_IMAGES:
        raise BadInput("too_many_images", f"{len(array)} images; at most {MAX_PIXEL_IMAGES} per request")
    if not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 255):
        raise BadInput("out_of_range", f"pixel values must be finite numbers from 0 to 255; {expected}")
    return array.astype(np.float32)


def png_base64(image: np.ndarray) -> str:
    import cv2

    return base64.b64encode(cv2.imencode(".png", image)[1].tobytes()).decode("ascii")


def heatmap_pngs(model, images: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Grad-CAM of the predicted class for images (N, 28, 28): the probabilities and each heatmap resized
    to 28×28, scaled to 0–255, as a base64 PNG."""
    import cv2

    cam = explain.gradcam(model, images[..., None])
    maps = [cv2.resize(m, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) for m in cam.heatmaps]
    return cam.probabilities, [png_base64(np.uint8(np.rint(255 * np.clip(m, 0, 1)))) for m in maps]


def top_classes(probabilities: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
    """The k most probable classes of each row, most probable first."""
    classes, shares = evaluate.top_k(probabilities, k)
    return [
        [
            {"label": config.CLASS_NAMES[c], "index": int(c), "probability": float(p)}
            for c, p in zip(cs, ps, strict=True)
        ]
        for cs, ps in zip(classes, shares, strict=True)
    ]


def mirror_rows(loaded: LoadedModel, conversions: list | None) -> list[int]:
    """The rows that are also classified mirrored (``confidence.tries_mirror``)."""
    return [i for i, c in enumerate(conversions or []) if confidence.tries_mirror(c, loaded.familiarity)]


def keep_surer(
    answers: np.ndarray, mirrored: np.ndarray, rows: list[int], conversions: list, hows: list[str]
) -> np.ndarray:
    """``answers`` (``LoadedModel.predict`` rows) with each of ``rows`` replaced by its mirror image's answer
    (``mirrored``, in the order of ``rows``) where the model is surer of it; that row's conversion becomes
    the mirrored one and its ``how`` says so (both lists are changed in place)."""
    answers = answers.copy()
    flip = confidence.surer_mirrored(split(answers[rows])[0], split(mirrored)[0])
    for row, answer, flipped in zip(rows, mirrored, flip, strict=True):
        if flipped:
            answers[row] = answer
            conversions[row] = photos.mirror(conversions[row])
            hows[row] += (
                ", mirrored (the model was surer of the product facing the other way; a heatmap lies over"
                " the mirror image)"
            )
    return answers


def verdicts(
    loaded: LoadedModel, probabilities: np.ndarray, distances: np.ndarray, conversions: list | None = None
) -> list[dict[str, Any]]:
    """For each image: a class or "not sure", with the reasons (``confidence.decide``)."""
    conversions = conversions or [None] * len(probabilities)
    out = []
    for p, d, c in zip(probabilities, distances, conversions, strict=True):
        verdict = confidence.decide(p, c, float(d), loaded.familiarity)
        out.append({"label": verdict.label, "sure": verdict.sure, "reasons": list(verdict.reasons)})
    return out
