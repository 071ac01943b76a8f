"""Grad-CAM on models whose answer is known, on the shipped model, and inside a nested backbone."""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest

from fashion_lib import config, explain, models


@pytest.fixture(scope="module")
def left_half_model():
    """A tiny CNN trained on images where only the left half decides the class."""
    rng = np.random.default_rng(0)
    n = 1200
    x = rng.random((n, 28, 28, 1)).astype("float32") * 60  # noise everywhere
    y = rng.integers(0, 2, n)
    x[y == 1, 8:20, 2:12] += 180  # class 1: a bright patch on the left
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Rescaling(1 / 255)(inputs)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_b")(h)
    h = keras.layers.GlobalMaxPooling2D()(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs, name="left_half")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=10, batch_size=64, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] > 0.95
    return model, x[y == 1][:20]


def test_most_of_the_heatmap_mass_is_on_the_half_that_matters(left_half_model):
    model, positives = left_half_model
    cam = explain.gradcam(model, positives, class_index=1)
    left = cam.heatmaps[:, :, :14].sum()
    assert left / cam.heatmaps.sum() > 0.8
    assert cam.layer == "conv_b"


def test_heatmaps_are_non_negative_normalised_and_the_right_shape(dataset):
    model = models.load_model(config.CACHED_MODELS_DIR / "baseline" / "model.keras")
    cam = explain.gradcam(model, dataset.x_test[:5][..., None])
    assert cam.heatmaps.shape == (5, 7, 7) and cam.layer == "conv3_relu"
    assert cam.heatmaps.min() >= 0 and np.allclose(cam.heatmaps.reshape(5, -1).max(axis=1), 1.0)
    assert np.array_equal(cam.class_index, cam.probabilities.argmax(axis=1))
    chosen = explain.gradcam(model, dataset.x_test[:2][..., None], class_index=6)
    assert list(chosen.class_index) == [6, 6]
    finer = explain.gradcam(model, dataset.x_test[:1][..., None], layer="conv1_relu")
    assert finer.heatmaps.shape == (1, 28, 28)


def test_transfer_models_reach_their_last_convolution():
    model = models.build_model("mobilenet_v2", 64, "none")
    assert explain.last_conv_layer(model) == ("out_relu", None)
    cam = explain.gradcam(model, np.zeros((1, 28, 28, 1), "float32") + 100, layer="out_relu")
    assert cam.layer == "out_relu" and cam.heatmaps.shape == (1, 2, 2)
    assert explain.model_input_view(model, np.zeros((28, 28), np.uint8)).shape == (64, 64)


def test_the_automatic_layer_is_the_last_convolution_unless_its_map_is_smaller_than_6x6():
    baseline = models.load_model(config.CACHED_MODELS_DIR / "baseline" / "model.keras")
    assert explain.automatic_layer(baseline) == ("conv3_relu", None)  # 7×7: the last convolution
    at_224 = models.build_model("mobilenet_v2", 224, "none")
    assert explain.automatic_layer(at_224) == ("out_relu", None)  # 7×7
    at_128 = models.build_model("mobilenet_v2", 128, "none")  # out_relu is 4×4
    cam = explain.gradcam(at_128, np.zeros((1, 28, 28, 1), "float32") + 100)
    assert cam.layer == "block_13_expand_relu" and cam.heatmaps.shape == (1, 8, 8)


def test_the_shipped_mobilenet_automatic_maps_are_never_empty_and_favour_the_garment(dataset):
    model = models.load_model(config.CACHED_MODELS_DIR / "mobilenet_v2" / "model.keras")
    images = dataset.x_test[:40]
    garment = images > 30

    def garment_over_background(cam):
        heat = np.stack([cv2.resize(h, (28, 28), interpolation=cv2.INTER_LINEAR) for h in cam.heatmaps])
        return heat[garment].mean() / heat[~garment].mean()

    cam = explain.gradcam(model, images[..., None])
    assert (cam.heatmaps.reshape(40, -1).max(axis=1) == 1.0).all()  # no empty map
    assert garment_over_background(cam) > 2.0  # 2.17 on these 40
    # why the automatic layer is not the last convolution here: its 4×4 maps (19 of these 40 empty)
    last = explain.gradcam(model, images[..., None], layer="out_relu")
    assert (last.heatmaps.reshape(40, -1).max(axis=1) == 0).sum() >= 10
    assert garment_over_background(last) < 1.0  # 0.84


def _nested(backbone_layers, size: int = 28):
    """A model whose backbone (the given layers, in order) is nested as one layer."""
    inner_in = keras.Input((size, size, 1))
    h = inner_in
    for layer in backbone_layers:
        h = layer(h)
    backbone = keras.Model(inner_in, h, name="backbone")
    outer_in = keras.Input((size, size, 1))
    h = keras.layers.GlobalAveragePooling2D()(backbone(outer_in))
    return keras.Model(outer_in, keras.layers.Dense(10, activation="softmax")(h), name="nested")


def test_the_automatic_layer_inside_a_nested_backbone():
    # the last convolution is 28×28 and not an activation layer: it is the one explained
    large = _nested(
        [
            keras.layers.Conv2D(4, 3, padding="same", name="conv_a"),
            keras.layers.Activation("relu", name="act_a"),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_b"),
        ]
    )
    assert explain.automatic_layer(large) == ("conv_b", "backbone")
    # the backbone ends on 4×4: the last activation with a map of at least 6×6 inside it
    small = _nested(
        [
            keras.layers.Conv2D(4, 3, padding="same", name="conv_a"),
            keras.layers.Activation("relu", name="act_a"),
            keras.layers.Conv2D(4, 3, strides=7, activation="relu", name="conv_b"),
        ]
    )
    assert explain.automatic_layer(small) == ("act_a", "backbone")
    cam = explain.gradcam(small, np.random.default_rng(0).random((2, 28, 28, 1)) * 255)
    assert cam.layer == "act_a" and cam.heatmaps.shape == (2, 28, 28)
    # nothing large enough: the last convolution after all
    tiny = _nested([keras.layers.Conv2D(4, 3, strides=7, activation="relu", name="conv_b")])
    assert explain.automatic_layer(tiny) == ("conv_b", "backbone")


def test_last_convolution_is_found_inside_a_nested_backbone():
    model = _nested([keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="inner_conv")])
    assert explain.last_conv_layer(model) == ("inner_conv", "backbone")
    cam = explain.gradcam(model, np.random.default_rng(0).random((2, 28, 28, 1)) * 255)
    assert cam.heatmaps.shape == (2, 28, 28) and cam.layer == "inner_conv"


def test_the_map_size_caption_advises_on_coarse_maps():
    assert explain.map_size((8, 8)) == "8×8 map"
    assert explain.map_size((6, 6)) == "6×6 map"  # the smallest the automatic layer takes
    assert explain.map_size((4, 4)).startswith("4×4 map; coarse: an earlier layer")  # MobileNetV2's out_relu
    assert "coarse" in explain.map_size((7, 2))


def test_overlay_keeps_the_image_size():
    out = explain.overlay(np.zeros((84, 84), np.uint8), np.ones((7, 7), np.float32), 0.5)
    assert out.shape == (84, 84, 3) and out.dtype == np.uint8 and out[..., 0].max() > 0
