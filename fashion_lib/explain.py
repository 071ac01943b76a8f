"""Grad-CAM (Selvaraju et al. 2017), after the keras.io example: which parts of the input raised the score
of a class, read at the last convolution or, where its map is coarser than 6×6, at the last activation with
a finer one (``automatic_layer``), or at a layer picked. Works on the flat models this project builds and on
models whose backbone is nested as one layer (the classic cause of "Graph disconnected" errors in Grad-CAM
tools).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from fashion_lib import models


def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _map_shape(layer) -> tuple[int | None, int | None] | None:
    """(height, width) of the layer's 2-D feature map (either may be unknown); None where it has none."""
    shape = getattr(getattr(layer, "output", None), "shape", None)
    return (shape[1], shape[2]) if shape is not None and len(shape) == 4 else None


def _spatial(layer) -> bool:
    shape = _map_shape(layer)
    return shape is not None and shape[0] is not None and shape[0] > 1


def last_conv_layer(model) -> tuple[str, str | None]:
    """(layer name, name of the nested backbone holding it or None): the known last convolution of this
    project's models, else the last layer with a 2-D feature map, looking inside a nested backbone."""
    names = {layer.name for layer in model.layers}
    known = models.LAST_CONV_LAYER.get(model.name)
    if known in names:
        return known, None
    for layer in reversed(model.layers):
        if _is_model(layer):
            inner = [sub for sub in layer.layers if _spatial(sub)]
            if inner:
                return inner[-1].name, layer.name
        elif _spatial(layer):
            return layer.name, None
    raise ValueError(f"model '{model.name}' has no convolutional feature map to explain")


# The automatic layer's map is at least this many cells on a side where the network has such a layer. The
# last convolution is the most class-specific, but on a small input its map is coarse and can be useless:
# MobileNetV2 at 128 px ends on 4×4, where half the test images got an empty map and the others put as much
# heat on the background as on the garment; its last 8×8 activation had no empty map and 2.4 times the heat on
# the garment (300 test images, the shipped model).
MIN_AUTOMATIC_SIDE = 6


def _side(layer) -> int:
    """The smaller side of the layer's 2-D map; 0 where it has none or a side is not known."""
    shape = _map_shape(layer)
    return 0 if shape is None or None in shape else min(shape)


def automatic_layer(model) -> tuple[str, str | None]:
    """The layer Grad-CAM explains unless one is picked, as (name, nested backbone or None): the last
    convolution when its map is at least ``MIN_AUTOMATIC_SIDE`` on a side (the baseline's 7×7, any network at
    224 px); else the last activation before it whose map is that large; else the last convolution."""
    last, nested = last_conv_layer(model)
    holder = model.get_layer(nested) if nested else model
    names = [layer.name for layer in holder.layers]
    if _side(holder.layers[names.index(last)]) >= MIN_AUTOMATIC_SIDE:
        return last, nested
    for layer in reversed(holder.layers[: names.index(last)]):
        if type(layer).__name__ in ("ReLU", "Activation") and _side(layer) >= MIN_AUTOMATIC_SIDE:
            return layer.name, nested
    return last, nested


def map_size(shape: tuple[int, ...]) -> str:
    """How a heatmap's grid reads in the page's caption ("8×8 map"), with advice when it is coarser than the
    automatic layer allows (``MIN_AUTOMATIC_SIDE``: smaller maps were often empty or off the garment)."""
    h, w = shape[:2]
    advice = "; coarse: an earlier layer or a larger input size gives a finer map"
    return f"{h}×{w} map" + (advice if min(h, w) < MIN_AUTOMATIC_SIDE else "")


def conv_layers(model) -> list[str]:
    """Layers with a 2-D feature map the user may pick instead of the last one (flat models)."""
    return [
        layer.name
        for layer in model.layers
        if _spatial(layer)
        and not _is_model(layer)
        and not layer.name.startswith(("adapter_", "pixels"))
        and type(layer).__name__ != "InputLayer"
    ]


@dataclass(frozen=True)
class GradCam:
    heatmaps: np.ndarray  # (N, h, w) in [0, 1]: h × w is the feature-map size of the chosen layer
    probabilities: np.ndarray  # (N, 10)
    class_index: np.ndarray  # (N,) the class each map explains
    layer: str


@functools.lru_cache(maxsize=8)
def _grad_model(model, layer: str, nested: str | None):
    """A callable images → (feature maps, probabilities) that keeps the graph connected."""
    import keras

    if nested is None:
        return keras.Model(model.input, [model.get_layer(layer).output, model.output])
    backbone = model.get_layer(nested)
    inner = keras.Model(backbone.input, [backbone.get_layer(layer).output, backbone.output])
    position = [lay.name for lay in model.layers].index(nested)
    before, after = model.layers[1:position], model.layers[position + 1 :]

    def run(x, training=False):
        for lay in before:
            x = lay(x, training=training)
        maps, x = inner(x, training=training)
        for lay in after:
            x = lay(x, training=training)
        return maps, x

    return run


@functools.lru_cache(maxsize=8)
def _cam_function(model, layer: str, nested: str | None):
    """A compiled (tf.function) Grad-CAM for one model and layer: traced once, then fast on every photo."""
    import tensorflow as tf

    grad_model = _grad_model(model, layer, nested)

    @tf.function(reduce_retracing=True)
    def run(x, requested):
        with tf.GradientTape() as tape:
            maps, probs = grad_model(x, training=False)
            chosen = tf.where(requested < 0, tf.argmax(probs, axis=1), requested)
            scores = tf.gather(probs, chosen, axis=1, batch_dims=1)
        grads = tape.gradient(scores, maps)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1)), probs, chosen

    return run


def gradcam(
    model, images: np.ndarray, class_index: int | np.ndarray | None = None, layer: str | None = None
) -> GradCam:
    """Grad-CAM heatmaps of raw-pixel images (N, 28, 28, 1) for the predicted class, or for ``class_index``
    (one class for all images, or one per image), at ``layer`` or the automatic one. Heatmaps are ReLU'd
    and scaled to [0, 1] per image."""
    import tensorflow as tf

    nested = None
    if layer is None:
        layer, nested = automatic_layer(model)
    x = tf.convert_to_tensor(np.asarray(images, dtype=np.float32).reshape(-1, 28, 28, 1))
    wanted = -1 if class_index is None else class_index
    requested = tf.convert_to_tensor(np.broadcast_to(np.asarray(wanted, dtype=np.int64), (x.shape[0],)))
    cams, probs, chosen = (t.numpy() for t in _cam_function(model, layer, nested)(x, requested))
    peak = cams.reshape(len(cams), -1).max(axis=1).reshape(-1, 1, 1)
    cams = np.divide(cams, peak, out=np.zeros_like(cams), where=peak > 0)
    return GradCam(cams.astype(np.float32), probs, chosen, layer)


def overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    opacity: float = 0.45,
    region: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """The heatmap (any size, [0, 1]) resized onto ``image`` (gray or RGB uint8) with OpenCV's JET colour
    map; with ``region`` (x0, y0, x1, y1) only that part of the image is coloured."""
    base = (image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)).astype(np.uint8)
    h, w = base.shape[:2]
    resized = cv2.resize(heatmap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.cvtColor(
        cv2.applyColorMap(np.uint8(255 * np.clip(resized, 0, 1)), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
    )
    blended = cv2.addWeighted(base, 1.0 - opacity, colour, opacity, 0)
    if region is None:
        return blended
    x0, y0, x1, y1 = region
    out = base.copy()
    out[y0:y1, x0:x1] = blended[y0:y1, x0:x1]
    return out


def model_input_view(model, image28: np.ndarray) -> np.ndarray:
    """What the backbone sees: the 28×28 image after the model's own resize (uint8 for display)."""
    import keras

    names = [layer.name for layer in model.layers]
    if "adapter_resize" not in names:
        return image28
    resize = keras.Model(model.input, model.get_layer("adapter_resize").output)
    out = np.asarray(resize(image28.reshape(1, 28, 28, 1).astype(np.float32)))[0, ..., 0]
    return np.clip(out, 0, 255).astype(np.uint8)
