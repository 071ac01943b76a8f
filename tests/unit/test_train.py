"""Training engine: config round-trip, one-epoch runs of every model, run folders, resume, stop, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from fashion_lib import augment, config, lifecycle, models, runs, train
from fashion_lib.training import feature_cache, pipelines

TINY = {"subset": 200, "test_subset": 50, "epochs": 1, "batch_size": 32, "input_size": 32}


def tiny(**overrides) -> train.TrainConfig:
    return train.TrainConfig(**{**TINY, **overrides})


# ------------------------------------------------------------------------------------------- config


def test_config_round_trips_through_json():
    cfg = tiny(model="mobilenet_v2", fine_tune=True, augment=augment.AugmentConfig(rotation=0.05, seed=3))
    again = train.TrainConfig.from_json(cfg.to_json())
    assert again == cfg and isinstance(again.augment, augment.AugmentConfig)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", "resnet", "model must be one of"),
        ("input_size", 8, "input size"),
        ("subset", 5, "subset"),
        ("epochs", 0, "epochs"),
        ("optimizer", "lion", "optimizer"),
        ("label_smoothing", 1.0, "label smoothing"),
        ("compute_dtype", "float16", "compute dtype"),
    ],
)
def test_invalid_config_says_what_is_wrong(field, value, message):
    with pytest.raises(ValueError, match=message):
        tiny(**{field: value})


def test_fine_tuning_the_baseline_is_refused():
    with pytest.raises(ValueError, match="transfer models"):
        tiny(fine_tune=True)


def test_unknown_config_field_is_refused():
    with pytest.raises(ValueError, match="unknown training settings: colour"):
        train.TrainConfig.from_dict({"colour": "red"})


def test_subsets_and_splits_follow_the_config(dataset):
    splits = pipelines.make_splits(tiny(subset=1000, val_fraction=0.2, test_subset=100), dataset)
    assert len(splits.x_train) == 800 and len(splits.x_val) == 200 and len(splits.x_test) == 100
    assert splits.x_train.shape[1:] == (28, 28, 1) and splits.x_train.dtype == np.uint8
    assert np.array_equal(np.bincount(splits.y_val, minlength=10), np.full(10, 20))
    assert len(np.intersect1d(splits.train_index, splits.val_index)) == 0


def test_training_pipeline_shows_every_image_once_per_epoch_in_a_new_order_without_the_autotuner():
    n = 300
    labels = np.arange(n)  # each label names its image
    images = (labels % 256).astype(np.uint8).reshape(n, 1, 1, 1).repeat(28, 1).repeat(28, 2)
    pipeline = pipelines.make_dataset(images, labels, batch_size=64, shuffle_seed=7)
    epochs = []
    for _ in range(2):
        batches = [(x.numpy(), y.numpy()) for x, y in pipeline]
        assert all(x.dtype == np.float32 and np.array_equal(x[:, 5, 5, 0], y % 256) for x, y in batches)
        epochs.append(np.concatenate([y for _, y in batches]))
    assert [sorted(order) for order in epochs] == [list(range(n))] * 2
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
    again = np.concatenate([y.numpy() for _, y in pipelines.make_dataset(images, labels, 64, shuffle_seed=7)])
    assert np.array_equal(again, epochs[0])  # the same seed gives the same order
    # The autotuner made the first step of many epochs wait 15–20 s on the 2-core machine (see
    # pipelines.without_autotune; measured in bench.baseline_full's epoch times).
    assert pipeline.options().autotune.enabled is False


def test_an_augmented_pipeline_with_the_same_seeds_gives_the_same_batches(dataset):
    from fashion_lib import augment

    images, labels = dataset.x_train[:512, ..., None], dataset.y_train[:512]
    aug = augment.AugmentConfig(rotation=0.05, translation=0.1, erasing=0.5, seed=1)

    def batches():
        return [x.numpy() for x, _ in pipelines.make_dataset(images, labels, 32, shuffle_seed=7, aug=aug)]

    first, again = batches(), batches()
    assert not np.array_equal(first[0], images[:32].astype(np.float32))  # augmented
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


# ----------------------------------------------------------------------------------- one-epoch runs


@pytest.mark.parametrize(
    "cfg",
    [tiny(model="baseline"), tiny(model="efficientnet_b0"), tiny(model="mobilenet_v2", feature_cache=False)],
    ids=["baseline", "efficientnet_b0-cached-features", "mobilenet_v2-end-to-end"],
)
def test_each_model_trains_one_epoch_into_a_complete_run_folder(cfg, dataset):
    folder = train.train(cfg)
    assert lifecycle.effective_state(folder) == "completed"
    assert train.TrainConfig.from_dict(runs.read_json(folder / runs.CONFIG_FILE)) == cfg
    metrics = runs.read_metrics(folder)
    assert [row["epoch"] for row in metrics] == [1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(metrics[0])
    summary = runs.read_json(folder / runs.SUMMARY_FILE)
    assert summary["training_images"] == 180 and summary["test_images"] == 50
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and len(summary["per_class_f1"]) == 10
    assert summary["feature_cache"] == cfg.uses_feature_cache()
    assert summary["model_size_bytes"] == (folder / "model.keras").stat().st_size
    assert summary["latency_ms_per_image_batched"] > 0
    if cfg.model != "baseline":
        assert summary["weights"] == "no ImageNet weights"
        assert "random-init" in folder.name
        assert summary["parameters"]["stage1"]["backbone_trainable"] == 0
    # the saved model is self-contained and reproduces the saved predictions
    saved = np.load(folder / runs.PREDICTIONS_FILE)
    model = models.load_model(folder / "model.keras")
    x_test = dataset.x_test[saved["test_index"]][..., None].astype("float32")
    assert np.allclose(np.asarray(model(x_test)), saved["probabilities"], atol=1e-5)
    assert np.array_equal(saved["labels"], dataset.y_test[saved["test_index"]])
    # the accuracy in the summary is computed from those predictions
    assert summary["test_accuracy"] == pytest.approx(
        np.mean(saved["probabilities"].argmax(1) == saved["labels"])
    )


@pytest.mark.parametrize("model", ["baseline", "mobilenet_v2"], ids=["on-images", "on-cached-features"])
def test_label_smoothing_trains_on_one_hot_targets_and_keeps_the_accuracy_metric(model, dataset):
    folder = train.train(tiny(model=model, label_smoothing=0.1, epochs=2))
    metrics = runs.read_metrics(folder)
    assert lifecycle.effective_state(folder) == "completed" and len(metrics) == 2
    # smoothed targets never reach zero loss: the floor is their entropy, 0.50 nats for 0.1 over 10 classes
    floor = -(0.91 * np.log(0.91) + 9 * 0.01 * np.log(0.01))
    assert all(row["loss"] > floor and 0 <= row["val_accuracy"] <= 1 for row in metrics)
    assert runs.read_json(folder / runs.CONFIG_FILE)["label_smoothing"] == 0.1


@pytest.mark.parametrize("model", ["baseline", "mobilenet_v2"], ids=["on-images", "on-cached-features"])
def test_bfloat16_training_saves_a_float32_model_that_reproduces_the_run_predictions(model, dataset):
    folder = train.train(tiny(model=model, compute_dtype="bfloat16", subset=300))
    assert lifecycle.effective_state(folder) == "completed" and folder.name.endswith("bf16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    saved = models.load_model(folder / "model.keras")
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    predictions = np.load(folder / runs.PREDICTIONS_FILE)
    x_test = dataset.x_test[predictions["test_index"]][..., None].astype("float32")
    assert np.allclose(np.asarray(saved(x_test)), predictions["probabilities"], atol=1e-5)
    summary = runs.read_json(folder / runs.SUMMARY_FILE)
    assert summary["compute_dtype"] == "bfloat16" and 0 <= summary["test_accuracy"] <= 1


def test_temperature_is_fitted_on_the_validation_split_unless_turned_off(dataset):
    calibrated = runs.read_json(train.train(tiny(subset=400)) / runs.SUMMARY_FILE)
    # applied where it lowers the validation images' calibration error, else recorded as not applied
    applied = calibrated["validation_ece_after"] <= calibrated["validation_ece_before"]
    fitted = calibrated["temperature" if applied else "temperature_rejected"]
    assert 0.05 <= fitted <= 20 and calibrated["calibration_images"] == 40
    assert ("temperature" in calibrated) == applied != ("temperature_rejected" in calibrated)
    assert {"validation_ece_before", "validation_ece_after", "calibration_seconds"} <= set(calibrated)
    plain = runs.read_json(train.train(tiny(subset=400, temperature_scaling=False)) / runs.SUMMARY_FILE)
    assert "temperature" not in plain and "calibration_seconds" not in plain
    # the predicted classes, hence the accuracy, do not depend on the temperature
    assert plain["test_accuracy"] == pytest.approx(calibrated["test_accuracy"], abs=0.021)


def test_feature_cached_head_gives_the_same_predictions_as_the_full_model(dataset):
    cfg = tiny(model="mobilenet_v2", seed=5)
    folder = train.train(cfg)
    model = models.load_model(folder / "model.keras")
    weights = models.resolve_weights(cfg.model, cfg.weights)
    cache = feature_cache.FeatureCache(
        config.cache_dir() / "features" / feature_cache.feature_cache_key(cfg, weights), 1280
    )
    splits = pipelines.make_splits(cfg, dataset)
    cached = cache.get(splits.train_index[:20], splits.x_train_full, extractor=None)  # all cached already
    via_cache = np.asarray(models.head_model(model)(cached))
    full = np.asarray(model(splits.x_train[:20].astype("float32")))
    assert np.allclose(via_cache, full, atol=1e-4)


def test_feature_cache_is_reused_by_a_second_run(dataset):
    first = train.train(tiny(model="efficientnet_b0", seed=11))
    second = train.train(tiny(model="efficientnet_b0", seed=11, learning_rate=3e-3))
    s1 = runs.read_json(first / runs.SUMMARY_FILE)
    s2 = runs.read_json(second / runs.SUMMARY_FILE)
    assert s1["features_extracted"] == 200 and s2["features_extracted"] == 0  # all from the cache


def test_fine_tuning_continues_from_stage_one_with_the_top_layers_unfrozen(dataset):
    folder = train.train(tiny(model="mobilenet_v2", fine_tune=True, fine_tune_layers=10, fine_tune_epochs=1))
    metrics = runs.read_metrics(folder)
    assert [(r["stage"], r["epoch"]) for r in metrics] == [(1, 1), (2, 2)]
    assert metrics[1]["learning_rate"] == pytest.approx(1e-4)
    params = runs.read_json(folder / runs.SUMMARY_FILE)["parameters"]
    assert params["stage1"]["backbone_trainable"] == 0 < params["stage2"]["backbone_trainable"]
    assert folder.name.endswith("-ft")


# ------------------------------------------------------------------------------- resume and stop


class CrashAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("power cut")


class FirstEpochSeen(keras.callbacks.Callback):
    first = None

    def on_epoch_begin(self, epoch, logs=None):
        if FirstEpochSeen.first is None:
            FirstEpochSeen.first = epoch


def test_an_interrupted_run_resumes_where_it_stopped(dataset):
    cfg = tiny(epochs=3, early_stopping_patience=0)
    folder = train.start_run(cfg)
    with pytest.raises(RuntimeError, match="power cut"):
        train.train(run_dir=folder, extra_callbacks=[CrashAtEpoch(2)])
    state = lifecycle.state_of(folder)
    assert state.state == "failed" and "power cut" in state.error
    assert [r["epoch"] for r in runs.read_metrics(folder)] == [1, 2]

    train.train(run_dir=folder, extra_callbacks=[FirstEpochSeen()])
    assert FirstEpochSeen.first == 2  # started at the third epoch, from the backup
    assert [r["epoch"] for r in runs.read_metrics(folder)] == [1, 2, 3]
    assert lifecycle.effective_state(folder) == "completed"


class RequestStopAtBatch(keras.callbacks.Callback):
    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 1:
            lifecycle.request_stop(self.folder)


def test_a_stop_request_ends_the_run_gracefully_with_the_model_saved(dataset):
    cfg = tiny(epochs=5, early_stopping_patience=0)
    folder = train.start_run(cfg)
    train.train(run_dir=folder, extra_callbacks=[RequestStopAtBatch(folder)])
    assert lifecycle.effective_state(folder) == "stopped"
    assert len(runs.read_metrics(folder)) == 1  # stopped inside the first epoch
    assert (folder / "model.keras").is_file() and (folder / runs.SUMMARY_FILE).is_file()
    assert runs.read_json(folder / runs.SUMMARY_FILE)["stopped_early_by_user"] is True
    assert not lifecycle.stop_requested(folder)


# ----------------------------------------------------------------------------------- command line


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fashion_lib", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=config.REPO_ROOT,
        timeout=300,
    )


def test_cli_trains_a_tiny_config_end_to_end_and_lists_the_run():
    done = cli(
        "train",
        "--model",
        "baseline",
        "--subset",
        "200",
        "--test-subset",
        "50",
        "--epochs",
        "1",
        "--augment",
        json.dumps({"rotation": 0.05, "seed": 1}),
        "--seed",
        "3",
    )
    assert done.returncode == 0, done.stderr
    folder_line = [line for line in done.stdout.splitlines() if line.startswith("run folder: ")][-1]
    folder = folder_line.removeprefix("run folder: ")
    cfg = train.TrainConfig.from_dict(
        runs.read_json(config.runs_dir() / os.path.basename(folder) / "config.json")
    )
    assert cfg.seed == 3 and cfg.augment.rotation == 0.05
    listed = cli("runs")
    assert os.path.basename(folder) in listed.stdout


def test_cli_rejects_a_bad_config_with_a_clear_message():
    done = cli("train", "--model", "baseline", "--subset", "5")
    assert done.returncode == 2
    assert "subset must be 0 (all) or 20–60000" in done.stderr and "Traceback" not in done.stderr


def test_the_smallest_allowed_subset_trains_end_to_end(dataset):
    # 20 images: 10 % validation rounded to none per class, which used to fail the run after training
    folder = train.train(tiny(subset=20, test_subset=10, epochs=1))
    assert lifecycle.effective_state(folder) == "completed"
    assert runs.read_json(folder / runs.SUMMARY_FILE)["validation_images"] == 10


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('{"rotation": 5}', "'rotation' must be between 0 and 0.5, got 5"),
        ('{"flip_horizontal": "no"}', "must be true or false"),
        ("{bad", "not a JSON object of augmentation settings"),
        ("no-such-preset", "no augmentation preset named 'no-such-preset'"),
    ],
)
def test_a_bad_augment_flag_says_what_is_wrong(value, words):
    done = cli("train", "--augment", value)
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr
