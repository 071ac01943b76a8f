"""Background jobs (one at a time, stop, interrupted), run registry, diagnosis, collapse, estimates."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from fashion_lib import (
    confidence,
    config,
    evaluate,
    export,
    jobs,
    lifecycle,
    models,
    pitfall,
    processes,
    runs,
    train,
)
from fashion_lib.training import estimates
from tests.unit.test_train import tiny


def wait_for(predicate, timeout=120.0, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


# ------------------------------------------------------------------------------------------------ jobs


def test_a_background_job_trains_and_a_second_waits_its_turn(dataset):
    first = train.start_run(tiny(epochs=40, early_stopping_patience=0))
    second = train.start_run(tiny(epochs=1))
    p1 = jobs.start(first)
    assert wait_for(lambda: lifecycle.effective_state(first) == "running")
    assert jobs.active_run() == first
    with pytest.raises(jobs.JobBusyError, match=first.name):
        jobs.start(second)
    p2 = jobs.start(second, queue=True)
    assert wait_for(lambda: lifecycle.state_of(second).owner is not None)  # the child claimed it
    assert lifecycle.effective_state(second) == "queued"  # waiting for the lock, not training
    assert jobs.queue_position(second) == 1
    jobs.stop(first)
    assert p1.wait(timeout=120) == 0
    assert lifecycle.effective_state(first) == "stopped"
    assert (first / "model.keras").is_file()
    assert p2.wait(timeout=180) == 0
    assert lifecycle.effective_state(second) == "completed"
    assert jobs.active_run() is None


def test_a_run_whose_process_died_is_shown_as_interrupted(tmp_path):
    folder = runs.create_run({"model": "baseline"}, "dead", runs_root=tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    owner = processes.identify(sleeper.pid)
    # what that process wrote while it trained, before it was killed
    runs.write_json(folder / runs.STATUS_FILE, {"state": "running", "owner": owner.to_dict()})
    assert lifecycle.effective_state(folder) == "running"
    sleeper.kill()
    sleeper.wait()
    state = lifecycle.state_of(folder)
    assert state.state == "interrupted" and f"pid {owner.pid}" in state.detail
    assert jobs.actions(state) == (jobs.RESUME, jobs.AGAIN, jobs.DELETE)


HOLD_THE_MACHINE = """
import sys, time
from pathlib import Path
from fashion_lib import jobs
with jobs.machine_lock(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def machine_held(tmp_path):
    """Another process holds the machine's job lock (as a training job would)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_MACHINE, str(tmp_path / "someone-elses-run")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=config.REPO_ROOT,
    )
    assert holder.stdout.readline().strip() == "holding"
    yield holder
    holder.kill()
    holder.wait()


def claimed(folder) -> bool:
    """The started process has taken the run over from its launcher (its own pid is in the status)."""
    status, _ = lifecycle.read_status(folder)
    return status is not None and "pid" in (status.owner or {})


def test_stopping_a_queued_run_ends_it_at_once(machine_held, dataset):
    folder = train.start_run(tiny())
    proc = jobs.start(folder, queue=True)
    assert wait_for(lambda: claimed(folder))  # waiting for the machine
    state = lifecycle.state_of(folder)
    assert state.state == "queued" and jobs.actions(state) == (jobs.STOP,)  # never offered Resume
    assert jobs.stop(folder)
    assert proc.wait(timeout=30) == 0
    assert lifecycle.effective_state(folder) == "stopped"  # written by the run's own process
    assert not (folder / "model.keras").exists()


def test_a_run_stopped_the_moment_it_was_queued_ends_stopped(machine_held, dataset):
    folder = train.start_run(tiny())
    proc = jobs.start(folder, queue=True)
    assert jobs.stop(folder)  # before its process has even started Python
    proc.wait(timeout=30)
    assert lifecycle.effective_state(folder) == "stopped"


# ----------------------------------------------------------------------------------------- run registry


def progress_at(folder, **fields):
    base = {"stage": 1, "phase": "training", "epochs": 4, "batches": 100}
    runs.write_json(folder / runs.PROGRESS_FILE, {**base, **fields})
    return runs.progress_summary(folder)


def test_progress_eta_comes_from_this_runs_measured_rate(tmp_path):
    folder = runs.create_run({"model": "baseline"}, "p", runs_root=tmp_path)
    runs.append_metrics(folder, {"stage": 1, "epoch": 1, "seconds": 10.0})
    # batch 1 took 4 s (tracing); then 49 batches in 4.9 s: 10 batches/s → 5 s for the 50 left in this
    # epoch, and 2 more epochs at the 10 s the finished one took
    progress = progress_at(folder, epoch=2, batch=50, epoch_elapsed=8.9, warm_batch=1, warm_elapsed=4.0)
    assert progress.fraction == pytest.approx(1.5 / 4) and "epoch 2 of 4" in progress.text
    assert progress.eta_seconds == pytest.approx(5.0 + 2 * 10.0)


def test_no_eta_before_the_rate_is_known(tmp_path):
    # at batch 1 of a 28 s run the old estimate said "about 6 min 32 s left": now it says nothing yet
    folder = runs.create_run({"model": "baseline"}, "p", runs_root=tmp_path)
    progress = progress_at(folder, epoch=1, batch=1, epoch_elapsed=3.9, warm_batch=1, warm_elapsed=3.9)
    assert progress.eta_seconds is None
    first_epoch = progress_at(folder, epoch=1, batch=21, epoch_elapsed=5.9, warm_batch=1, warm_elapsed=3.9)
    assert first_epoch.eta_seconds == pytest.approx(79 / 10 + 3 * 100 / 10)  # no finished epoch: the rate


def test_the_bar_stays_full_after_the_last_epoch_and_empty_before_the_first(tmp_path):
    """It ran back to 0 while the finished model was evaluated (a new user watched it go 100 % → 0)."""
    folder = runs.create_run({"model": "baseline"}, "p", runs_root=tmp_path)
    for phase, trained, fraction in (
        ("product photos for training: 10 of 100 converted", False, 0.0),
        ("evaluating on the test set", True, 1.0),
    ):
        runs.write_json(folder / runs.PROGRESS_FILE, {"phase": phase, "trained": trained})
        assert runs.progress_summary(folder) == runs.Progress(fraction, None, phase)


def test_delete_removes_a_run_but_never_a_shipped_model(tmp_path):
    folder = runs.create_run({"model": "baseline"}, "x", runs_root=tmp_path)
    runs.delete_run(folder, runs_root=tmp_path)
    assert not folder.exists()
    with pytest.raises(ValueError, match="cannot be deleted"):
        runs.delete_run(config.CACHED_MODELS_DIR / "baseline", runs_root=tmp_path)


def test_run_ids_never_collide(tmp_path):
    a = runs.create_run({"model": "m"}, "same", runs_root=tmp_path)
    b = runs.create_run({"model": "m"}, "same", runs_root=tmp_path)
    assert a != b and a.is_dir() and b.is_dir()


def test_comparison_table_and_shipping_read_the_real_summary(dataset, tmp_path):
    folder = train.train(tiny())
    (folder / export.COMMAND_FILE).write_text("python -m fashion_lib train --subset 200\n")
    info = runs.read_run(folder)
    row = runs.comparison_table([info])[0]
    summary = runs.read_json(folder / runs.SUMMARY_FILE)
    assert (
        row["test accuracy"] == summary["test_accuracy"]
        and row["parameters"] == summary["parameters"]["stage1"]["total"]
    )
    shipped = export.ship_run(folder, "tiny", target_root=tmp_path)
    assert shipped.stat().st_mode & 0o755 == 0o755  # readable by everyone, as a checkout's folders are
    card = json.loads((shipped / "card.json").read_text())
    assert card["test_accuracy"] == summary["test_accuracy"] and card["command"].startswith(
        "python -m fashion_lib"
    )
    readme = (shipped / "README.md").read_text()
    assert "Reproduce with" in readme and evaluate.temperature_sentence(summary) in readme
    # shipped without optimizer state: smaller, the same predictions, its real size on the card
    shipped_model = shipped / runs.MODEL_FILE
    assert card["model_size_bytes"] == shipped_model.stat().st_size < summary["model_size_bytes"]
    assert runs.read_json(shipped / runs.SUMMARY_FILE)["model_size_bytes"] == card["model_size_bytes"]
    x = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1)).astype("float32")
    original, again = models.load_model(folder / runs.MODEL_FILE), models.load_model(shipped_model)
    assert np.allclose(np.asarray(original(x)), np.asarray(again(x)), atol=1e-6)
    loaded = runs.read_run(shipped, shipped=True)
    assert loaded.shipped and loaded.test_accuracy == summary["test_accuracy"]
    # its familiarity statistics ship beside it, made for the shipped file (not the run's)
    kept = confidence.read(shipped / confidence.FAMILIARITY_FILE, confidence.digest(shipped_model))
    assert kept is not None and kept.layer == "head_hidden" and kept.means.shape[0] == 10


def fake_run(folder, model, accuracy, state="completed", shipped=False, collapsed=False):
    """A RunInfo whose folder holds predictions: right on ``accuracy`` of 1,000 images, or all 'Dress'."""
    folder.mkdir(parents=True)
    labels = np.repeat(np.arange(10), 100)
    predicted = (
        np.full(1000, 3)
        if collapsed
        else np.where(np.arange(1000) < accuracy * 1000, labels, (labels + 1) % 10)
    )
    np.savez(
        folder / runs.PREDICTIONS_FILE,
        probabilities=np.eye(10)[predicted],
        labels=labels,
        test_index=np.arange(1000),
    )
    return runs.RunInfo(folder.name, folder, state, model, shipped, accuracy, None)


def test_default_model_is_the_last_choice_else_the_best_completed_never_a_collapsed_one(tmp_path):
    best = fake_run(tmp_path / "2", "baseline", 0.93)
    collapsed = fake_run(tmp_path / "9", "efficientnet_b0", 0.95, collapsed=True)  # newer and "better"
    stopped = fake_run(tmp_path / "5", "baseline", 0.99, state="stopped")
    shipped = fake_run(tmp_path / "ship", "baseline", 0.91, shipped=True)
    candidates = [collapsed, stopped, best, shipped]
    assert runs.default_choice(candidates).run_id == "2"
    assert runs.default_choice(candidates, last_choice="ship").run_id == "ship"  # the user's own choice
    assert runs.default_choice(candidates, last_choice="gone").run_id == "2"
    assert runs.default_choice([collapsed]).run_id == "9"  # nothing else to show: still something


def test_default_comparison_is_the_shipped_models_and_the_best_own_run_of_each_family(tmp_path):
    candidates = [
        fake_run(tmp_path / "3", "baseline", 0.90),
        fake_run(tmp_path / "2", "mobilenet_v2", 0.94, state="stopped"),
        fake_run(tmp_path / "1", "baseline", 0.92),
        fake_run(tmp_path / "4", "efficientnet_b0", 0.10, collapsed=True),
        fake_run(tmp_path / "ship", "baseline", 0.93, shipped=True),
        fake_run(tmp_path / "m-ship", "mobilenet_v2", 0.95, shipped=True),
    ]
    assert [r.run_id for r in runs.default_comparison(candidates)] == ["ship", "m-ship", "1"]


def test_the_run_a_shipped_model_was_copied_from_is_not_compared_with_itself(tmp_path):
    source = fake_run(tmp_path / "20260101-000000-baseline", "baseline", 0.93)
    other = fake_run(tmp_path / "20260102-000000-baseline", "baseline", 0.92)
    shipped = fake_run(tmp_path / "ship", "baseline", 0.93, shipped=True)
    (shipped.folder / runs.CARD_FILE).write_text(json.dumps({"run_id": source.run_id}))
    assert runs.shipped_from(shipped) == source.run_id and runs.shipped_from(source) is None
    chosen = runs.default_comparison([source, other, shipped])
    assert [r.run_id for r in chosen] == ["ship", other.run_id]


# ------------------------------------------------------------------------------------------- diagnosis


def rows(train_acc, val_acc, val_loss):
    return [
        {"epoch": i + 1, "accuracy": a, "val_accuracy": v, "val_loss": loss, "loss": 0.0}
        for i, (a, v, loss) in enumerate(zip(train_acc, val_acc, val_loss, strict=True))
    ]


def test_diagnosis_over_fitting_when_validation_loss_turns_up():
    d = evaluate.diagnose_curves(
        rows([0.90, 0.95, 0.98, 0.99], [0.90, 0.91, 0.90, 0.89], [0.30, 0.28, 0.33, 0.40])
    )
    assert d.verdict == "over-fitting" and d.best_epoch == 2 and d.accuracy_gap == pytest.approx(0.10)


def test_diagnosis_under_fitting_when_still_falling():
    d = evaluate.diagnose_curves(rows([0.60, 0.70, 0.75], [0.62, 0.71, 0.76], [1.0, 0.8, 0.7]))
    assert d.verdict == "under-fitting" and d.still_improving


def test_diagnosis_good_fit_when_converged_and_close():
    d = evaluate.diagnose_curves(rows([0.90, 0.92, 0.925], [0.90, 0.915, 0.92], [0.30, 0.25, 0.249]))
    assert d.verdict == "good fit"


def test_diagnosis_a_large_gap_is_over_fitting_even_while_validation_loss_falls():
    # 71 % train against 22 % validation accuracy (a run on a tiny subset): memorising, not under-fitting
    d = evaluate.diagnose_curves(rows([0.40, 0.60, 0.71], [0.15, 0.20, 0.22], [2.3, 2.2, 2.1]))
    assert d.still_improving and d.accuracy_gap == pytest.approx(0.49) and d.verdict == "over-fitting"


def test_diagnosis_a_small_gap_at_a_plateau_is_a_good_fit():
    d = evaluate.diagnose_curves(rows([0.90, 0.94, 0.96], [0.90, 0.925, 0.925], [0.30, 0.27, 0.2702]))
    assert d.accuracy_gap == pytest.approx(0.035) and d.verdict == "good fit"


def test_diagnosis_chance_level_on_both_is_under_fitting():
    d = evaluate.diagnose_curves(rows([0.10, 0.10, 0.11], [0.10, 0.10, 0.10], [2.30, 2.30, 2.30]))
    assert d.verdict == "under-fitting"


def test_diagnosis_needs_two_epochs():
    one = evaluate.diagnose_curves(rows([0.9], [0.9], [0.3]))
    assert one.verdict == "not enough epochs" and "one epoch, so no trend yet" in one.explanation()
    assert "falling" not in one.explanation()  # it said "validation loss no longer falling" after one epoch
    none = evaluate.diagnose_curves([{"epoch": 1, "accuracy": 0.5}])  # no validation loss recorded
    assert none.explanation() == "Not enough epochs: no epoch with a validation loss yet."


@pytest.mark.parametrize(
    ("val_loss", "trend"),
    [
        ([0.30, 0.25, 0.249], "levelling off (the last epoch cut it by 0.4 %)"),  # best last, by a hair
        # 0.617193 → 0.617166 read "cut it by 0.0%" (the shipped MobileNetV2)
        ([0.70, 0.617193, 0.617166], "levelling off (the last epoch cut it by less than 0.1 %)"),
        ([0.30, 0.25, 0.20], "still falling"),
        ([0.30, 0.25, 0.26], "no longer falling"),
        ([0.20, 0.30, 0.20], "still falling"),  # back to its low: the last of equal lows is the best
    ],
)
def test_the_diagnosis_names_the_trend_the_numbers_show(val_loss, trend):
    diagnosis = evaluate.diagnose_curves(rows([0.90, 0.92, 0.925], [0.90, 0.915, 0.92], val_loss))
    assert f"validation loss {trend})" in diagnosis.explanation()


def test_the_diagnosis_gives_the_accuracy_gap_in_points_and_a_best_final_loss_in_words():
    best_last = evaluate.diagnose_curves(rows([0.90, 0.95, 0.961], [0.90, 0.92, 0.926], [0.3, 0.25, 0.249]))
    text = best_last.explanation()
    assert "accuracy gap +3.5 points" in text and "the final validation loss is its best" in text
    risen = evaluate.diagnose_curves(rows([0.90, 0.95, 0.961], [0.90, 0.92, 0.926], [0.3, 0.25, 0.275]))
    assert "final validation loss 10.0 % above its best" in risen.explanation()


# -------------------------------------------------------------------------------------------- collapse


def test_collapse_report_flags_one_dominant_class():
    labels = np.repeat(np.arange(10), 10)
    probs = np.zeros((100, 10))
    probs[:, 3] = 1.0  # everything predicted as Dress
    report = evaluate.collapse_report(labels, probs)
    assert report.collapsed and report.top_class == "Dress" and report.top_share == 1.0
    assert report.accuracy == pytest.approx(0.1)
    healthy = evaluate.collapse_report(labels, np.eye(10)[labels])
    assert not healthy.collapsed and healthy.accuracy == 1.0


def test_classification_summary_matches_scikit_learn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    probs = rng.random((500, 10))
    summary = evaluate.classification_summary(labels, probs)
    assert summary["macro_f1"] == pytest.approx(f1_score(labels, probs.argmax(1), average="macro"))
    assert summary["test_accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels))


# ------------------------------------------------------------------------------------------- estimates


def test_pitfall_lab_presets_differ_only_in_the_division(monkeypatch, tmp_path):
    monkeypatch.setenv("FASHION_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    lab = pitfall.plan()
    assert lab.weights == "none" and "random initialisation" in lab.note
    bug, fixed = pitfall.configs(lab).values()
    assert bug.input_scaling == "divide_by_255" and fixed.input_scaling == "raw"
    assert {**bug.to_dict(), "input_scaling": "raw"} == fixed.to_dict()
    assert bug.subset == 1000


def test_divide_by_255_squeezes_the_model_input_to_nearly_one_value(dataset):
    from fashion_lib import models

    x = dataset.x_train[:16][..., None].astype("float32")
    pipeline = models.input_pipeline("mobilenet_v2", 32)
    raw, bug = np.asarray(pipeline(x)), np.asarray(pipeline(x / 255))
    assert raw.max() - raw.min() > 1.9 and bug.max() - bug.min() < 0.01
    folder = train.train(tiny(model="mobilenet_v2", input_scaling="divide_by_255"))
    assert runs.read_json(folder / runs.SUMMARY_FILE)["input_scaling"] == "divide_by_255"
    assert "div255" in folder.name


def test_memory_warning_for_large_image_training_only(monkeypatch):
    monkeypatch.setattr(estimates, "machine_memory_gb", lambda: 24.0)
    big = tiny(model="efficientnet_b0", input_size=224, batch_size=256, fine_tune=True)
    message = estimates.memory_warning(big)
    assert "this machine has 24 GB" in message
    safe = int(message.split("Use a batch of ")[1].split()[0])
    # the advised batch fits under the warning line and a batch 8 larger does not
    assert estimates.memory_warning(dataclasses.replace(big, batch_size=safe)) is None
    assert estimates.memory_warning(dataclasses.replace(big, batch_size=safe + 8)) is not None
    assert (
        estimates.memory_warning(tiny(model="efficientnet_b0", input_size=96, batch_size=64, fine_tune=True))
        is None
    )
    assert (
        estimates.memory_warning(tiny(model="efficientnet_b0", input_size=224, batch_size=256)) is None
    )  # cached
    assert estimates.memory_warning(tiny(input_size=224, batch_size=256)) is None  # the baseline reads 28×28
    monkeypatch.setattr(estimates, "machine_memory_gb", lambda: 1024.0)
    assert estimates.memory_warning(big) is None  # a bigger machine is not warned


def test_memory_estimate_grows_with_batch_and_pixels():
    (b1, m1), (b2, m2) = sorted(estimates.MEMORY_AT_224.items())

    def estimate(size, batch):
        return estimates.memory_estimate_gb(
            tiny(model="mobilenet_v2", input_size=size, batch_size=batch, fine_tune=True)
        )

    assert estimate(224, b1) == pytest.approx(m1) and estimate(224, b2) == pytest.approx(m2)
    assert estimate(112, 4 * b2) == pytest.approx(m2)  # a quarter of the pixels, four times the batch
    assert estimate(224, 2 * b2) > m2
    assert estimates.machine_memory_gb() > 1


def test_an_epoch_cut_short_by_a_stop_is_left_out_of_the_diagnosis():
    stopped = rows([0.90, 0.95, 0.97], [0.90, 0.92, 0.93], [0.30, 0.25, 0.20])
    stopped[-1]["partial"] = True  # a tenth of an epoch: its loss said "still falling", "train longer"
    d = evaluate.diagnose_curves(stopped)
    assert d.epochs == 2 and d.best_epoch == 2 and "of 2" in d.explanation()


def test_a_listing_read_by_a_reader_that_stops_early_ends_quietly():
    """``runs | head`` ended in a BrokenPipeError traceback."""
    listing = subprocess.Popen(
        [sys.executable, "-m", "fashion_lib", "runs"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=config.REPO_ROOT,
    )
    listing.stdout.close()  # the reader has gone before the listing writes its first line
    _, err = listing.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_a_run_refused_the_machine_leaves_no_folder_and_a_bad_seed_makes_none(tmp_path, monkeypatch, capsys):
    """--no-wait while another job ran left a 'stopped' run that never trained, offered for resuming; a
    negative seed made a run folder that then failed on it."""
    from fashion_lib.__main__ import main

    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    with jobs.machine_lock(tmp_path / "holder", kind="train", wait=False):  # another job holds the machine
        assert main(["train", "--subset", "200", "--epochs", "1", "--no-wait"]) == 2
        capsys.readouterr()
        # under the lock and --no-wait: a regression of the seed check is refused the machine, not trained
        assert main(["train", "--subset", "200", "--epochs", "1", "--seed", "-5", "--no-wait"]) == 2
        assert "seed must be 0–4294967295, got -5" in capsys.readouterr().err
    assert not config.runs_dir().exists() or list(config.runs_dir().iterdir()) == []
