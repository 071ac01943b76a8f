"""The run state machine with real processes: killed, stopped, completed and queued runs, two quick starts,
process identity, failures before training, and crash-safe writes (issue #12: each case failed before)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest

from fashion_lib import export, jobs, lifecycle, models, processes, runs, train
from fashion_lib.training import feature_cache
from tests.app.conftest import page_test
from tests.processes import command
from tests.unit.test_jobs_and_runs import claimed, machine_held, wait_for  # noqa: F401 (fixture)
from tests.unit.test_train import cli, tiny


def metric_epochs(folder) -> list[tuple[int, int]]:
    return [(r["stage"], r["epoch"]) for r in runs.read_metrics(folder)]


# ------------------------------------------------------------------------------------ the state machine


def test_every_state_has_its_moves_and_completed_is_final():
    assert set(lifecycle.MOVES) == {None, *lifecycle.STATES}
    assert lifecycle.MOVES[lifecycle.COMPLETED] == ()
    for state in (lifecycle.STOPPED, lifecycle.FAILED, lifecycle.INTERRUPTED):
        assert lifecycle.QUEUED in lifecycle.MOVES[state]  # resumable
    assert lifecycle.RUNNING not in lifecycle.MOVES[lifecycle.INTERRUPTED]  # only through queued


def test_a_live_owner_is_the_only_writer(tmp_path):
    folder = runs.create_run({"model": "baseline"}, "owned", runs_root=tmp_path)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(lifecycle.RunStateError, match="owned by process"):
            lifecycle.transition(folder, lifecycle.RUNNING, by=processes.identify(stranger.pid))
    finally:
        stranger.kill()
        stranger.wait()
    lifecycle.transition(folder, lifecycle.RUNNING, by=processes.current())  # the owner may
    assert lifecycle.effective_state(folder) == "running"


def test_concurrent_updates_are_never_lost(tmp_path):
    folder = runs.create_run({"model": "baseline"}, "busy", runs_root=tmp_path)
    me = processes.current()

    def writer(key: str) -> None:
        for i in range(25):
            lifecycle.transition(folder, lifecycle.QUEUED, by=me, **{key: i})

    threads = [threading.Thread(target=writer, args=(f"field{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = json.loads((folder / runs.STATUS_FILE).read_text())
    assert all(status[f"field{k}"] == 24 for k in range(4))  # every writer's last update survived
    assert not list(folder.glob(".status.json.*"))  # no temporary file left behind


def test_an_unreadable_status_makes_the_run_damaged_not_an_exception(tmp_path):
    folder = runs.create_run({"model": "baseline"}, "garbled", runs_root=tmp_path)
    (folder / runs.STATUS_FILE).write_bytes(b"\xff\xfe{not json")
    state = lifecycle.state_of(folder)
    assert state.state == "damaged" and "status.json" in state.detail
    assert jobs.actions(state) == (jobs.DELETE,)
    with pytest.raises(lifecycle.RunStateError, match="damaged"):
        lifecycle.transition(folder, lifecycle.QUEUED, by=processes.current())


# --------------------------------------------------------------------------------- process identity


def test_a_recorded_identity_never_matches_another_process():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        real = processes.identify(sleeper.pid)
        assert real.alive()
        # the same pid, started at another time: what a reused pid looks like
        impostor = processes.ProcessIdentity(real.pid, real.start_ticks + 1, real.boot_id)
        assert not impostor.alive()
        assert not impostor.signal(signal.SIGTERM)
        assert sleeper.poll() is None  # untouched
        after_reboot = processes.ProcessIdentity(real.pid, real.start_ticks, "another-boot")
        assert not after_reboot.alive()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stop_never_signals_a_process_that_is_not_the_runs(tmp_path):
    folder = runs.create_run({"model": "baseline"}, "reused-pid", runs_root=tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        real = processes.identify(bystander.pid)
        recorded = processes.ProcessIdentity(real.pid, real.start_ticks - 1, real.boot_id)
        runs.write_json(folder / runs.STATUS_FILE, {"state": "running", "owner": recorded.to_dict()})
        assert lifecycle.effective_state(folder) == "interrupted"  # that run's process is gone
        assert jobs.stop(folder) is False
        time.sleep(0.3)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# ------------------------------------------------------------------------------ real jobs and the CLI


def test_two_quick_starts_cannot_both_run(dataset):
    first = train.start_run(tiny(epochs=30, early_stopping_patience=0))
    second = train.start_run(tiny())
    proc = jobs.start(first)
    try:
        with pytest.raises(jobs.JobBusyError, match=first.name):
            jobs.start(second)  # at once: the lock was taken before the first start returned
        assert lifecycle.effective_state(second) == "queued"  # untouched, still ours to delete
        runs.delete_run(second)
    finally:
        jobs.stop(first)
        proc.wait(timeout=120)


def test_a_killed_job_is_interrupted_everywhere_and_resumes_where_it_was(dataset):
    folder = train.start_run(tiny(epochs=4, early_stopping_patience=0, subset=2000))
    proc = jobs.start(folder)
    assert wait_for(lambda: len(runs.read_metrics(folder)) >= 1, timeout=120)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = lifecycle.state_of(folder)
    assert state.state == "interrupted" and "ended without finishing" in state.detail
    listed = cli("runs").stdout
    assert any(folder.name in line and "interrupted" in line for line in listed.splitlines())
    at = page_test("training.py")
    at.session_state["tr_run_pick"] = folder.name
    at.run()
    assert not at.exception
    assert any("status: **interrupted**" in md.value for md in at.markdown)
    assert at.button(key="tr_resume") is not None
    done_before = len(runs.read_metrics(folder))

    jobs.start(folder, queue=True).wait(timeout=300)
    assert lifecycle.effective_state(folder) == "completed"
    epochs = metric_epochs(folder)
    assert epochs == [(1, e) for e in range(1, 5)]  # continued: no epoch twice
    assert done_before >= 1
    assert runs.read_json(folder / runs.SUMMARY_FILE)["epochs_run"] == 4


class StopAtEpoch(keras.callbacks.Callback):
    def __init__(self, folder, epoch: int):
        super().__init__()
        self.folder, self.epoch = folder, epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch_now == self.epoch and batch == 1:
            lifecycle.request_stop(self.folder)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_now = epoch


class EpochsSeen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)


def test_resuming_a_stopped_run_continues_it(dataset):
    folder = train.start_run(tiny(epochs=4, early_stopping_patience=0))
    train.train(run_dir=folder, extra_callbacks=[StopAtEpoch(folder, 1)])
    assert lifecycle.effective_state(folder) == "stopped"
    rows = runs.read_metrics(folder)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["partial"]  # the second epoch was cut short
    seen = EpochsSeen()
    train.train(run_dir=folder, extra_callbacks=[seen])
    assert seen.seen == [1, 2, 3]  # the cut-short second epoch again, whole, then the rest: it continued
    assert lifecycle.effective_state(folder) == "completed"
    rows = runs.read_metrics(folder)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and not any(r["partial"] for r in rows)
    assert runs.read_json(folder / runs.SUMMARY_FILE)["epochs_run"] == 4
    assert not (folder / runs.BACKUP_DIR).exists()  # a completed run keeps no resume state


def test_a_completed_run_cannot_be_resumed(dataset):
    folder = train.train(tiny())
    model_time = (folder / runs.MODEL_FILE).stat().st_mtime_ns
    with pytest.raises(lifecycle.RunStateError, match="completed and cannot be resumed"):
        train.train(run_dir=folder)
    with pytest.raises(lifecycle.RunStateError, match="completed"):
        jobs.start(folder, queue=True)
    done = cli("train", "--resume", folder.name)
    assert done.returncode == 2 and "--again" in done.stderr and "Traceback" not in done.stderr
    assert metric_epochs(folder) == [(1, 1)] and (folder / runs.MODEL_FILE).stat().st_mtime_ns == model_time
    assert jobs.actions(lifecycle.state_of(folder)) == (jobs.AGAIN, jobs.DELETE)


def test_training_again_makes_a_new_run_with_the_same_settings(dataset):
    first = train.train(tiny(seed=9))
    done = cli("train", "--again", first.name)
    assert done.returncode == 0, done.stderr
    second = runs.resolve_run(done.stdout.strip().splitlines()[-1].removeprefix("run folder: "))
    assert second != first and train.TrainConfig.from_run(second) == train.TrainConfig.from_run(first)


def test_a_run_queued_from_the_command_line_is_queued_for_the_page_too(machine_held, dataset):  # noqa: F811
    waiting = command(
        "train", "--subset", "200", "--test-subset", "50", "--epochs", "1", start_new_session=True
    )
    try:
        assert wait_for(lambda: any(r.state == "queued" for r in runs.list_runs(include_shipped=False)))
        folder = next(r.folder for r in runs.list_runs(include_shipped=False) if r.state == "queued")
        state = lifecycle.state_of(folder)
        assert state.owner is not None and state.owner.pid == waiting.pid
        assert jobs.actions(state) == (jobs.STOP,)  # no Resume for a queued run
        with pytest.raises(lifecycle.RunStateError, match="owned by process"):
            jobs.start(folder, queue=True)  # pressing Resume anyway cannot train it twice
        at = page_test("training.py")
        at.session_state["tr_run_pick"] = folder.name
        at.run()
        assert any("status: **queued**" in md.value for md in at.markdown)
        assert not any(b.key == "tr_resume" for b in at.button)
    finally:
        os.killpg(waiting.pid, signal.SIGKILL)
        waiting.wait()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("config", "ValueError: invalid training config: subset must be"),
        ("data", "DataNotFoundError: FASHION_MNIST_DIR is set to"),
    ],
)
def test_a_run_that_fails_before_training_ends_failed_with_its_reason_and_log(
    damage, reason, dataset, tmp_path, monkeypatch
):
    folder = train.start_run(tiny())
    if damage == "config":
        runs.write_json(folder / runs.CONFIG_FILE, {**tiny().to_dict(), "subset": 5})
    else:
        monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))  # the child finds no data there
    jobs.start(folder, queue=True).wait(timeout=120)
    state = lifecycle.state_of(folder)
    assert state.state == "failed" and state.error.startswith(reason)
    message = reason.split(": ", 1)[1]
    assert message in jobs.read_log_tail(folder)
    monkeypatch.undo()
    listed = cli("runs").stdout
    assert f"(failed: {reason}" in listed and str(folder / jobs.LOG_FILE) in listed  # the CLI says why too
    at = page_test("training.py")
    at.session_state["tr_run_pick"] = folder.name
    at.run()
    assert not at.exception
    assert any(reason in e.value for e in at.error)
    assert any(message in c.value for c in at.code)  # the log's tail is on the page


@pytest.mark.parametrize("model", ["baseline", "mobilenet_v2"])
def test_a_missing_weights_file_is_refused_for_every_model(model):
    done = cli("train", "--model", model, "--subset", "200", "--weights", "/nonexistent.h5")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    expected = "takes no weights" if model == "baseline" else "/nonexistent.h5 does not exist"
    assert expected in done.stderr


# ------------------------------------------------------------------------------ crash-safe writes


def test_shipping_replaces_the_shipped_model_only_when_the_new_one_is_complete(
    dataset, tmp_path, monkeypatch
):
    good = train.train(tiny(seed=1))
    export.ship_run(good, "baseline", target_root=tmp_path)
    before = (tmp_path / "baseline" / runs.CARD_FILE).read_text()
    newer = train.train(tiny(seed=2))

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(models, "load_model", disk_full)
    with pytest.raises(export.ExportError, match="No space left on device"):  # named, not a traceback
        export.ship_run(newer, "baseline", target_root=tmp_path)
    assert (tmp_path / "baseline" / runs.CARD_FILE).read_text() == before  # the old one is intact
    assert (tmp_path / "baseline" / runs.MODEL_FILE).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["baseline"]  # no half-built folder left


class Extractor:
    """Stands in for a backbone: the features of an image are its first four pixels."""

    def __call__(self, batch, training=False):
        return batch.reshape(len(batch), -1)[:, :4]


def test_feature_cache_keeps_what_was_extracted_when_stopped_and_survives_a_torn_mask(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (100, 28, 28, 1)).astype(np.uint8)
    cache = feature_cache.FeatureCache(tmp_path, dim=4, n=100)

    def stop_after_two_batches(done, total):
        if done >= 20:
            raise feature_cache.StopRequested

    with pytest.raises(feature_cache.StopRequested):
        cache.get(np.arange(100), images, Extractor(), stop_after_two_batches, step=10)
    again = feature_cache.FeatureCache(tmp_path, dim=4, n=100)
    assert again.done.sum() == 20 and again.done[:20].all()  # the two batches done before the stop
    full = again.get(np.arange(100), images, Extractor(), step=10)
    assert np.array_equal(full, images.reshape(100, -1)[:, :4].astype(np.float32))

    (tmp_path / "train_done.npy").write_bytes(b"\x93NUMPY torn")  # a write cut off mid-file
    torn = feature_cache.FeatureCache(tmp_path, dim=4, n=100)
    assert torn.done.sum() == 0  # nothing trusted; recomputed on demand, no crash
    assert np.array_equal(torn.get(np.arange(5), images, Extractor()), full[:5])


def test_stopping_a_run_this_process_created_closes_it_without_any_signal(tmp_path):
    folder = runs.create_run({"model": "baseline"}, "never-started", runs_root=tmp_path)
    assert jobs.stop(folder)  # had it signalled the owner's group, this test process would be gone
    assert lifecycle.effective_state(folder) == "stopped"
    assert runs.read_run(folder).problems == ()  # no model, no summary: it never began, it is not damaged


def test_a_run_stopped_while_queued_resumes_from_the_command_line_and_trains(machine_held, dataset):  # noqa: F811
    folder = train.start_run(tiny())
    proc = jobs.start(folder, queue=True)
    assert wait_for(lambda: claimed(folder))
    assert jobs.stop(folder)
    proc.wait(timeout=30)
    assert lifecycle.effective_state(folder) == "stopped" and not lifecycle.stop_requested(folder)
    assert not runs.read_run(folder).damaged
    machine_held.kill()
    machine_held.wait()
    done = cli("train", "--resume", folder.name)
    assert done.returncode == 0, done.stderr
    assert lifecycle.effective_state(folder) == "completed" and metric_epochs(folder) == [(1, 1)]
