"""Time estimates measured on this machine: from finished runs, from a short measurement, else the
development machine's constants — and always saying which."""

from __future__ import annotations

import os
import time

import pytest

from fashion_lib import lifecycle, processes, runs, train
from fashion_lib.training import estimates, speed
from tests.unit.test_train import tiny


@pytest.fixture(autouse=True)
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))


def test_without_measurements_the_estimate_says_it_is_the_development_machines():
    small = estimates.estimate_seconds(tiny(subset=1000, epochs=2))
    big = estimates.estimate_seconds(tiny(subset=20000, epochs=2))
    assert 0 < small.total < big.total and not small.measured
    assert "development machine" in small.basis
    ft = estimates.estimate_seconds(tiny(model="mobilenet_v2", fine_tune=True))
    assert {"feature extraction", "head training", "stage 2 (fine-tuning)"} <= set(ft.phases)
    assert estimates.forward_speed("efficientnet_b0", 96) == pytest.approx(379)


def test_product_photos_add_their_conversion_and_their_share_of_the_image_stages():
    plain = estimates.estimate_seconds(tiny(model="mobilenet_v2", subset=10000, fine_tune=True))
    mixed = estimates.estimate_seconds(
        tiny(model="mobilenet_v2", subset=10000, fine_tune=True, photo_mix=2000)
    )
    conversion = mixed.phases.pop("product photos (converted once, then cached)")
    assert conversion == pytest.approx(2000 * estimates.PHOTO_S_PER_IMAGE / os.cpu_count())
    assert mixed.phases["head training"] == plain.phases["head training"]  # cached features: no photos
    stage2 = "stage 2 (fine-tuning)"
    per_image = plain.phases[stage2] / (9000 + estimates.VALIDATION_SHARE * 1000)  # over its epochs
    assert mixed.phases[stage2] == pytest.approx(plain.phases[stage2] + 2000 * per_image)


def test_a_finished_run_measures_its_configuration_for_the_next_estimate(dataset):
    cfg = tiny(subset=600, epochs=2)
    folder = train.train(cfg)
    summary = runs.read_json(folder / runs.SUMMARY_FILE)
    first = runs.read_metrics(folder)[0]  # each epoch records its batches and its first batch's time
    assert first["batches"] >= 2 and 0 < first["warm_seconds"] < first["seconds"]
    estimate = estimates.estimate_seconds(cfg)
    assert estimate.measured and folder.name in estimate.basis
    # the same configuration again: the estimate is that run's own time, from its own numbers
    assert estimate.total == pytest.approx(summary["wall_seconds"], rel=0.25)
    # another size of the same model, batch and precision scales the measured rates
    bigger = estimates.estimate_seconds(tiny(subset=6000, epochs=2))
    assert bigger.measured and bigger.phases["training"] == pytest.approx(
        10 * estimate.phases["training"], rel=0.01
    )
    # a different batch size is another speed: not measured yet
    assert not estimates.estimate_seconds(tiny(subset=600, epochs=2, batch_size=64)).measured


def test_measuring_times_real_steps_and_is_kept(dataset):
    cfg = tiny(model="mobilenet_v2", fine_tune=True, feature_cache=False)
    measured = speed.measure(cfg, steps=2)
    assert measured.train_s_per_image > 0 and measured.fine_tune_s_per_image > 0
    assert measured.forward_s_per_image > 0
    estimate = estimates.estimate_seconds(cfg)
    assert "measured: 2 training steps" in estimate.basis
    assert "the fixed cost (start, calibration, evaluation) from the development" in estimate.basis
    assert speed.known(cfg) == measured


def test_a_run_whose_features_came_from_the_cache_measures_no_forward_speed(tmp_path, monkeypatch):
    """Reading 57,000 cached features took 1.1 s once: that is not 19 µs per forward pass."""
    cfg = tiny(model="mobilenet_v2")
    folder = train.start_run(cfg)
    me = processes.current()
    lifecycle.transition(folder, lifecycle.RUNNING, by=me)
    lifecycle.transition(folder, lifecycle.COMPLETED, by=me, finished=time.time())
    runs.append_metrics(folder, {"stage": 1, "epoch": 1, "seconds": 1.0, "val_accuracy": 0.5})
    summary = {"training_images": 180, "validation_images": 20, "wall_seconds": 5.0, "feature_cache": True}
    cached = {"feature_extraction_seconds": 1.1, "features_extracted": 0}
    runs.write_json(folder / runs.SUMMARY_FILE, {**summary, **cached})
    assert speed.record_run(cfg, folder).forward_s_per_image is None
    computed = {"feature_extraction_seconds": 2.0, "features_extracted": 50}
    runs.write_json(folder / runs.SUMMARY_FILE, {**summary, **computed})
    assert speed.record_run(cfg, folder).forward_s_per_image == pytest.approx(2.0 / 50)


def finished_run(cfg, rows, stage1_seconds):
    folder = train.start_run(cfg)
    me = processes.current()
    lifecycle.transition(folder, lifecycle.RUNNING, by=me)
    lifecycle.transition(folder, lifecycle.COMPLETED, by=me, finished=time.time())
    for row in rows:
        runs.append_metrics(folder, {"stage": 1, "val_accuracy": 0.5, **row})
    summary = {"training_images": 900, "validation_images": 100, "wall_seconds": 5.0}
    runs.write_json(folder / runs.SUMMARY_FILE, {**summary, "stage1_seconds": stage1_seconds})
    return folder


@pytest.mark.parametrize(
    ("rows", "steady_epoch"),
    [
        # one epoch of 8 batches, 1.3 s of them the first (graph tracing): 0.76 s for 7, 0.87 s for 8
        ([{"epoch": 1, "seconds": 2.06, "batches": 8, "warm_seconds": 1.3}], 0.76 * 8 / 7),
        # several epochs: the later ones, which trace nothing
        (
            [
                {"epoch": 1, "seconds": 3.0, "batches": 8, "warm_seconds": 1.0},
                {"epoch": 2, "seconds": 1.0, "batches": 8, "warm_seconds": 0.1},
                {"epoch": 3, "seconds": 1.2, "batches": 8, "warm_seconds": 0.1},
            ],
            1.1,
        ),
    ],
)
def test_graph_tracing_counts_once_not_per_image(rows, steady_epoch):
    """A 1,000-image, 1-epoch run made the next estimate of the default form 3 min 34 s instead of about
    a minute: its epoch's per-image rate held the tracing of the first batch."""
    cfg = tiny(subset=1000, epochs=len(rows))
    stage1 = sum(r["seconds"] for r in rows)
    speeds = speed.record_run(cfg, finished_run(cfg, rows, stage1))
    assert speeds.train_s_per_image == pytest.approx(steady_epoch / (900 + 0.25 * 100))
    tracing = rows[0]["seconds"] - steady_epoch
    assert speeds.overhead_s == pytest.approx(5.0 - (stage1 - tracing))  # a fixed cost of every run
    again = estimates.estimate_seconds(cfg)  # the same run again: still its own time
    assert again.total == pytest.approx(5.0, rel=0.01)


def test_the_written_total_is_the_sum_of_the_written_phases():
    estimate = estimates.Estimate({"training": 46.4, "start, calibration and evaluation": 6.4}, "x", True)
    assert estimate.total == pytest.approx(52.8) and estimate.written_total == 52.0  # "53 s" beside 46 + 6
