"""Model registry: input contract, adapter ranges, stages and parameter counts, weights lookup, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fashion_lib import config, evaluate, models

SIZE = 32  # the smallest input the backbones take: fast on CPU


@pytest.fixture(scope="module")
def transfer_models():
    return {name: models.build_model(name, SIZE, "none") for name in models.TRANSFER_MODELS}


def adapter_output(model, pixels: np.ndarray) -> np.ndarray:
    last = "adapter_rescale" if "adapter_rescale" in [layer.name for layer in model.layers] else "adapter_rgb"
    return np.asarray(keras.Model(model.input, model.get_layer(last).output)(pixels))


def test_baseline_takes_raw_pixels_and_scales_them_to_unit_range():
    model = models.build_baseline()
    x = np.array([np.zeros((28, 28, 1)), np.full((28, 28, 1), 255.0)], dtype="float32")
    scaled = np.asarray(keras.Model(model.input, model.get_layer("adapter_rescale").output)(x))
    assert scaled.min() == 0.0 and scaled.max() == pytest.approx(1.0)
    assert model.output.shape[1:] == (10,)


@pytest.mark.parametrize(
    ("name", "low", "high"), [("mobilenet_v2", -1.0, 1.0), ("efficientnet_b0", 0.0, 255.0)]
)
def test_transfer_adapter_resizes_to_rgb_in_the_backbones_range(transfer_models, name, low, high):
    x = np.array([np.zeros((28, 28, 1)), np.full((28, 28, 1), 255.0)], dtype="float32")
    out = adapter_output(transfer_models[name], x)
    assert out.shape == (2, SIZE, SIZE, 3)
    assert out[0].min() == pytest.approx(low) and out[1].max() == pytest.approx(high)
    assert np.allclose(out[..., 0], out[..., 2])  # gray copied to all three channels


def test_transfer_graph_is_flat_and_reaches_the_last_convolution(transfer_models):
    for name, model in transfer_models.items():
        assert not any(isinstance(layer, keras.Model) for layer in model.layers), (
            "backbone nested as one layer"
        )
        conv = model.get_layer(models.LAST_CONV_LAYER[name])
        grad_model = keras.Model(model.input, [conv.output, model.output])
        maps, probs = grad_model(np.zeros((1, 28, 28, 1), "float32"))
        assert maps.shape[1] == SIZE // 32 and probs.shape == (1, 10)


def test_stage_one_freezes_the_backbone_and_trains_only_the_head(transfer_models):
    model = transfer_models["efficientnet_b0"]
    counts = models.parameter_counts(model)
    assert counts["backbone_trainable"] == 0
    # head: BatchNormalization (gamma, beta over 1280 features) + Dense 1280 → 10
    assert counts["trainable"] == 2 * 1280 + 1280 * 10 + 10
    assert counts["total"] > 4_000_000


def test_stage_two_unfreezes_the_top_layers_but_keeps_batchnorm_frozen():
    model = models.build_model("mobilenet_v2", SIZE, "none")
    models.set_stage(model, 2, fine_tune_layers=20)
    backbone = models.backbone_layers(model)
    assert all(not layer.trainable for layer in backbone[:-20])
    top = backbone[-20:]
    assert any(layer.trainable for layer in top)
    assert all(not layer.trainable for layer in top if isinstance(layer, keras.layers.BatchNormalization))
    assert models.parameter_counts(model)["backbone_trainable"] > 0
    models.set_stage(model, 1)
    assert models.parameter_counts(model)["backbone_trainable"] == 0


def test_saved_model_loads_in_safe_mode_with_identical_predictions(tmp_path, transfer_models):
    model = transfer_models["mobilenet_v2"]
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = models.load_model(path)
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype("float32")
    assert np.allclose(model(x), loaded(x), atol=1e-5)
    assert not any(type(layer).__name__ == "Lambda" for layer in loaded.layers)


def test_feature_extractor_and_head_model_compose_to_the_full_model(transfer_models):
    model = transfer_models["efficientnet_b0"]
    x = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1)).astype("float32")
    composed = models.head_model(model)(models.feature_extractor(model)(x))
    assert np.allclose(composed, model(x), atol=1e-5)


def test_bad_input_size_and_unknown_model_are_refused():
    with pytest.raises(ValueError, match="between 32 and 224"):
        models.build_model("mobilenet_v2", 16)
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model("resnet")


# ------------------------------------------------------------------------------------------ weights


def test_no_weights_is_labelled_so():
    resolved = models.resolve_weights("efficientnet_b0", "none")
    assert resolved.keras_arg is None and resolved.label == "no ImageNet weights"


def test_imagenet_without_a_local_file_falls_back_to_keras_download(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert models.resolve_weights("efficientnet_b0", "imagenet").keras_arg == "imagenet"


def test_local_file_with_the_wrong_published_md5_is_refused(tmp_path, monkeypatch):
    (tmp_path / "efficientnetb0_notop.h5").write_bytes(b"not the real weights")
    monkeypatch.setenv("FASHION_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(models.WeightsUnavailableError, match="50bc09e76180e00e4465e1a485ddc09d"):
        models.resolve_weights("efficientnet_b0", "imagenet")


def test_local_keras_file_is_found_in_the_weights_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_WEIGHTS_DIR", str(tmp_path))
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    (tmp_path / name).write_bytes(b"x")  # Keras publishes no hash for this one
    resolved = models.resolve_weights("mobilenet_v2", "imagenet")
    assert resolved.path == tmp_path / name and resolved.label == "ImageNet"


def test_offline_imagenet_download_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: no network")

    from keras.src.applications import efficientnet

    monkeypatch.setattr(efficientnet.file_utils, "get_file", offline)
    with pytest.raises(models.WeightsUnavailableError) as err:
        models.build_model("efficientnet_b0", SIZE, "imagenet")
    message = str(err.value)
    assert "efficientnetb0_notop.h5" in message and "FASHION_WEIGHTS_DIR" in message and "'none'" in message


def test_real_mobilenet_weights_load_when_the_shared_folder_has_them(monkeypatch):
    folder = config.REPO_ROOT.parent / "shared" / "weights"
    if not (folder / "mobilenet_v2_1.0_no_top_rebuilt.h5").is_file():
        pytest.skip("no local ImageNet weights on this machine")
    monkeypatch.setenv("FASHION_WEIGHTS_DIR", str(folder))
    pretrained = models.build_model("mobilenet_v2", 64, "imagenet")
    random = models.build_model("mobilenet_v2", 64, "none")
    kernel = pretrained.get_layer("Conv1").get_weights()[0]
    assert not np.allclose(kernel, random.get_layer("Conv1").get_weights()[0])
    assert models.resolve_weights("mobilenet_v2", "imagenet").label == "ImageNet (rebuilt)"


def test_shipped_baseline_is_self_contained_and_its_card_is_honest(dataset):
    from fashion_lib import evaluate, runs

    folder = config.CACHED_MODELS_DIR / "baseline"
    card = runs.read_json(folder / "card.json")
    saved = evaluate.load_predictions(folder)
    probs, labels = saved.probabilities, saved.labels
    assert card["test_accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == labels)))
    assert np.array_equal(labels, dataset.y_test)
    model = models.load_model(folder / "model.keras")
    x = dataset.x_test[:64][..., None].astype("float32")
    assert np.allclose(np.asarray(model(x)), probs[:64], atol=1e-4)
    assert card["command"].startswith("python -m fashion_lib train --model baseline")
    assert card["data_fingerprint"] == "bc3b3a15d36c7b48"


def test_bfloat16_model_computes_in_bfloat16_and_its_float32_copy_keeps_every_weight():
    mixed = models.build_model("baseline", compute_dtype="bfloat16", seed=3)
    assert keras.config.dtype_policy().name == "float32"  # only the layers built inside changed
    assert mixed.get_layer("conv2").compute_dtype == "bfloat16"
    assert mixed.get_layer("head_dense").compute_dtype == "float32"  # probabilities stay float32
    exact = models.as_float32(mixed)
    assert {layer.dtype_policy.name for layer in exact.layers} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(mixed.get_weights(), exact.get_weights(), strict=True))
    pixels = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1)).astype("float32")
    # the same function up to bfloat16's 8-bit mantissa
    assert np.allclose(np.asarray(mixed(pixels)), np.asarray(exact(pixels)), atol=0.05)
    assert models.as_float32(exact) is exact
    with pytest.raises(ValueError, match="compute dtype"):
        models.build_model("baseline", compute_dtype="float16")


def test_folding_a_temperature_divides_the_logits():
    model = models.build_baseline(seed=2)
    pixels = np.random.default_rng(1).integers(0, 256, (16, 28, 28, 1)).astype("float32")
    before = np.asarray(model(pixels))
    models.fold_temperature(model, 2.5)
    after = np.asarray(model(pixels))
    assert np.allclose(after, evaluate.temperature_scaled(before, 2.5), atol=1e-5)
    assert np.array_equal(after.argmax(axis=1), before.argmax(axis=1))
