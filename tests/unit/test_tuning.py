"""Hyperparameter tuning: the search space as data, settings, and real searches through the command line —
resumed, with a worker killed mid-study, with two workers on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from fashion_lib import augment, config, jobs, lifecycle, runs, train
from fashion_lib.tuning import results, search, storage
from fashion_lib.tuning import space as spaces
from fashion_lib.tuning.config import FINAL_VAL_FRACTION, TuneConfig
from tests.processes import command, free_port
from tests.unit.test_jobs_and_runs import wait_for

TINY = ("--subset", "200", "--epochs", "2")
SLOWER = ("--subset", "2000", "--epochs", "3")  # trials long enough to be caught running
TUNE = (sys.executable, "-m", "fashion_lib", "tune")


def tune(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TUNE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=config.REPO_ROOT,
        timeout=timeout,
    )


def studies(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m fashion_lib studies ARGS`` with ``env`` added to this environment."""
    return subprocess.run(
        [sys.executable, "-m", "fashion_lib", "studies", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=config.REPO_ROOT,
    )


def trials_of(name: str, url: str | None = None) -> list:
    return storage.load_study(storage.open_store(url), name).get_trials(deepcopy=False)


def states(trials) -> list[str]:
    return [t.state.name for t in trials]


# ------------------------------------------------------------------------------------- search space


def test_the_space_is_data_and_narrowing_never_widens_it():
    space = spaces.default_space("baseline")
    assert {p.name for p in space} >= {
        "learning_rate",
        "dropout",
        "filters1",
        "batch_size",
        "augment_strength",
    }
    narrowed = spaces.narrow(
        space, {"dropout": "0.25"}, {"learning_rate": "0.001:0.005", "batch_size": "64,128"}
    )
    by_name = {p.name: p for p in narrowed}
    assert by_name["dropout"].kind == "fixed" and by_name["dropout"].value == 0.25
    assert (by_name["learning_rate"].low, by_name["learning_rate"].high) == (0.001, 0.005)
    assert by_name["batch_size"].choices == (64, 128)
    with pytest.raises(ValueError, match="within"):
        spaces.narrow(space, ranges={"learning_rate": "0.001:0.5"})
    with pytest.raises(ValueError, match="choose among"):
        spaces.narrow(space, ranges={"batch_size": "512"})
    by_name = {p.name: p for p in spaces.narrow(space, ranges={"batch_size": "256,64", "dropout": "0.3:0.3"})}
    assert by_name["batch_size"].choices == (64, 256)  # the declared order, as typed or not
    assert (by_name["dropout"].kind, by_name["dropout"].value) == ("fixed", 0.3)  # an empty range is a fix
    one = {p.name: p for p in spaces.narrow(space, ranges={"batch_size": "128"})}["batch_size"]
    assert (one.kind, one.value) == ("fixed", 128)
    with pytest.raises(ValueError, match="not a parameter"):
        spaces.narrow(space, ranges={"colour": "1:2"})
    assert spaces.space_from_json(spaces.space_to_json(narrowed)) == narrowed


def test_the_searched_augmentation_stops_at_a_mild_strength_and_old_studies_still_load():
    # over the whole 0–1 scale, strong augmentation never ranked in a study's top half at trial budgets
    # (space.AUGMENT_STRENGTH_MAX): the search stops at 0.3, and the page says what that means
    param = {p.name: p for p in spaces.default_space("baseline")}["augment_strength"]
    strongest = augment.of_strength(param.high)
    assert round(strongest.rotation * 360, 1) == 4.3 and strongest.zoom == strongest.translation == 0.03
    assert param.help == "0 = none; 0.3 = rotation ±4°, zoom ±3 %, shift ±3 %"
    # a study narrowed to 0.2–0.8 before the range shrank still loads (page, continuing, queued jobs),
    # searching what is still declared; given now, the same range is refused
    stored = TuneConfig(study="old", ranges={"learning_rate": "0.001:0.005"}).to_dict()
    stored["ranges"] = {"augment_strength": "0.2:0.8", "batch_size": [64, 512]}
    loaded = TuneConfig.from_dict(stored)
    by_name = {p.name: p for p in loaded.space()}
    assert (by_name["augment_strength"].low, by_name["augment_strength"].high) == (0.2, 0.3)
    assert (by_name["batch_size"].kind, by_name["batch_size"].value) == ("fixed", 64)  # one choice left
    with pytest.raises(ValueError, match="within"):
        TuneConfig(study="new", ranges={"augment_strength": "0.2:0.8"})


def test_a_trials_values_become_its_training_config():
    tc = TuneConfig(study="s", subset=2000, epochs=3)
    trial = optuna.trial.FixedTrial(
        {
            "learning_rate": 0.002,
            "lr_schedule": "cosine",
            "label_smoothing": 0.1,
            "dropout": 0.3,
            "filters1": 32,
            "filters2": 64,
            "filters3": 192,
            "dense_units": 256,
            "batch_size": 64,
            "augment_strength": 0.25,
        }
    )
    cfg = tc.trial_config(spaces.suggest(trial, tc.space()))
    assert cfg.conv_filters == (32, 64, 192) and cfg.dense_units == 256 and cfg.dropout == 0.3
    assert cfg.augment == augment.of_strength(0.25, seed=tc.seed) and cfg.augment.rotation == 0.01
    assert cfg.subset == 2000 and cfg.epochs == 3
    assert not cfg.evaluate_test and not cfg.temperature_scaling  # trials never look at the test set
    final = tc.final_config(spaces.suggest(trial, tc.space()), epochs=12)
    assert (
        final.subset == 0
        and final.epochs == 12
        and final.evaluate_test
        and final.conv_filters == (32, 64, 192)
    )
    # the final model holds out the shipped models' small share, not the trials' fifth of the data
    shipped = json.loads((config.CACHED_MODELS_DIR / "baseline" / "config.json").read_text())
    assert final.val_fraction == FINAL_VAL_FRACTION == shipped["val_fraction"] < tc.val_fraction


def test_the_default_settings_as_search_values_give_back_the_default_config():
    for model, narrowed in (("baseline", {}), ("mobilenet_v2", {}), ("baseline", {"dropout": 0.4})):
        tc = TuneConfig(study="s", model=model, fixed=narrowed)
        values = tc.default_values()
        searched = {p.name for p in tc.space() if p.kind != spaces.FIXED}
        assert set(values) == searched  # every searched parameter has its default value, fixed ones none
        base = TuneConfig(study="s", model=model).base_config()
        # the same training, spelled out: the model's own dropout, "no augmentation" with the trial's seed
        expected = dataclasses.replace(
            base,
            dropout=narrowed.get("dropout", 0.2 if model == "baseline" else 0.3),
            augment=augment.of_strength(0.0, seed=base.seed) if model == "baseline" else base.augment,
        )
        # as a worker trains it: the enqueued values suggested back, the fixed ones added
        assert tc.trial_config(spaces.suggest(optuna.trial.FixedTrial(values), tc.space())) == expected
    assert TuneConfig(study="s").defaults_reference() == TuneConfig(study="s").default_values()
    # a default outside a narrowed range is not in the space: then there is no trial of the defaults
    tc = TuneConfig(study="s", ranges={"learning_rate": "0.003:0.01", "batch_size": "64,256"})
    assert "learning_rate" not in tc.default_values() and "batch_size" not in tc.default_values()
    assert tc.default_values()["lr_schedule"] == "plateau" and tc.defaults_reference() is None


def test_more_trials_for_a_study_need_the_same_data_budget(tmp_path):
    earlier = TuneConfig(study="s", subset=2000, epochs=3)
    assert (
        TuneConfig(study="s", subset=2000, epochs=3, trials=7, pruner="none").budget_change(earlier) is None
    )
    change = TuneConfig(study="s", subset=2000, epochs=4, val_fraction=0.1).budget_change(earlier)
    assert "epochs 3 (now 4)" in change and "validation share 0.2 (now 0.1)" in change
    # the page asks for neither the validation share nor the seed: an existing study's are used
    store = storage.open_store(f"sqlite:///{tmp_path / 's.db'}")
    stored_study(store)  # searched with TuneConfig's defaults (batch size among 64 and 128)
    batch = {"batch_size": "64,128"}
    tc, problem = search.continuing(store, TuneConfig(study="stored", val_fraction=0.3, seed=7, ranges=batch))
    assert problem is None and (tc.val_fraction, tc.seed) == (0.2, 42)
    tc, problem = search.continuing(store, TuneConfig(study="stored", epochs=9, ranges=batch))
    assert tc is None and "epochs 5 (now 9)" in problem
    assert search.continuing(store, TuneConfig(study="other"))[1].startswith("No study named")


def test_against_defaults_says_when_the_search_did_not_beat_them():
    study = optuna.create_study(direction="maximize")
    dist = {"dropout": optuna.distributions.FloatDistribution(0.1, 0.5)}
    for dropout, value, attrs in ((0.2, 0.91, {results.DEFAULTS_ATTR: True}), (0.4, 0.89, {})):
        study.add_trial(
            optuna.trial.create_trial(
                params={"dropout": dropout}, distributions=dist, value=value, user_attrs=attrs
            )
        )
    assert results.against_defaults(study) == (0.91, 0.89, 1)
    assert "not better than the default settings' 91.00 %" in results.against_defaults_text(study)
    assert "(-2.00 points)" in results.against_defaults_text(study)
    assert results.against_defaults(optuna.create_study()) is None  # nothing to compare yet


def test_fixed_training_settings_reach_every_trial_and_bad_settings_are_refused():
    tc = TuneConfig(study="s", fixed={"optimizer": "adamw", "dropout": 0.2})
    assert tc.base_config().optimizer == "adamw"
    assert {p.name: p for p in tc.space()}["dropout"].kind == "fixed"
    for bad, message in (
        ({"study": "has space"}, "study name"),
        ({"study": "s", "pruner": "coin"}, "pruner"),
        ({"study": "s", "workers": 0}, "workers"),
        ({"study": "s", "fixed": {"optimizer": "lion"}}, "optimizer"),
        ({"study": "s", "ranges": {"dropout": "0:0.9"}}, "within"),
        # the trials took the searched strength or filters; the study kept the fix and enforced it
        ({"study": "s", "fixed": {"augment": {"rotation": 0.05}}}, "through augment_strength; fix that"),
        ({"study": "s", "fixed": {"conv_filters": [8, 16, 32]}}, "through filters1, filters2, filters3"),
        ({"study": "s", "model": "mobilenet_v2", "fixed": {"augment": "foo"}}, "'augment' must be a JSON"),
        ({"study": "s", "fixed": {"batch_size": 7}}, "fix it at one of 64, 128, 256"),  # a fake "defaults"
        ({"study": "s", "fixed": {"dropout": 0.9}}, "fix it within"),
        ({"study": "s", "timeout": float("nan")}, "timeout must be 0"),  # stored as NaN: no limit
        ({"study": "s", "timeout": float("inf")}, "timeout must be 0"),
    ):
        with pytest.raises(ValueError, match=message):
            TuneConfig(**bad)


# ------------------------------------------------------------------------------------ real searches


def test_a_three_trial_study_end_to_end_and_resumed(dataset):
    done = tune(
        "--study",
        "e2e",
        "--trials",
        "3",
        *TINY,
        "--pruner",
        "none",
        "--fix",
        "dropout=0.25",
        "--fix",
        "filters1=8",
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("trial ")]
    assert len(lines) == 3 and all("best" in line and "learning_rate=" in line for line in lines)
    trials = trials_of("e2e")
    assert states(trials) == ["COMPLETE"] * 3
    # trial 0 tried the default settings (the fixed ones as fixed), the reference named at the end
    assert trials[0].user_attrs[results.DEFAULTS_ATTR] and "(the default settings)" in lines[0]
    reference = TuneConfig(study="e2e", subset=200, epochs=2, fixed={"dropout": 0.25, "filters1": 8})
    assert trials[0].params == reference.default_values()
    assert not any(results.DEFAULTS_ATTR in t.user_attrs for t in trials[1:])
    assert "on the same images and budget" in done.stdout
    for trial in trials:
        folder = config.runs_dir() / trial.user_attrs["run"]
        summary = runs.read_json(folder / runs.SUMMARY_FILE)
        assert summary["validation_accuracy"] == pytest.approx(trial.value)  # what the trial returned
        assert "test_accuracy" not in summary and not (folder / runs.PREDICTIONS_FILE).exists()
        assert runs.read_json(folder / runs.TRIAL_FILE) == {"study": "e2e", "number": trial.number}
        assert len(trial.intermediate_values) == 2  # one report per epoch
    # the winner trained for real uses every parameter its trial trained with, the fixed ones too
    study = storage.load_study(storage.open_store(), "e2e")
    best = results.best_trial(study)
    params = results.final_params(study, best.number)
    assert params["dropout"] == 0.25 and params["filters1"] == 8 and "dropout" not in best.params
    final = results.settings_of(study).final_config(params, epochs=3)
    assert final.dropout == 0.25 and final.conv_filters[0] == 8 and final.subset == 0
    trial_run = train.TrainConfig.from_run(config.runs_dir() / best.user_attrs["run"])
    assert (trial_run.dropout, trial_run.conv_filters) == (final.dropout, final.conv_filters)
    again = tune("--study", "e2e", "--trials", "2", *TINY, "--fix", "dropout=0.25", "--fix", "filters1=8")
    assert again.returncode == 0, again.stderr
    assert "3 earlier trials" in again.stdout
    assert len(trials_of("e2e")) == 5  # the same study, two more trials
    assert not any(results.DEFAULTS_ATTR in t.user_attrs for t in trials_of("e2e")[3:])  # tried once
    drawn = [tuple(sorted(t.params.items())) for t in trials_of("e2e")]
    assert len(set(drawn)) == 5  # the new search drew new settings (it repeated trials 1 and 2 before)
    other = tune("--study", "e2e", "--trials", "1", "--subset", "200", "--epochs", "3")
    assert other.returncode == 2 and "epochs 2 (now 3)" in other.stderr  # refused, nothing trained
    assert len(trials_of("e2e")) == 5


def test_a_worker_killed_mid_study_loses_no_completed_trial_and_the_next_search_goes_on(dataset):
    proc = command(
        "tune", "--study", "killed", "--trials", "4", *SLOWER, "--pruner", "none", "--heartbeat", "1"
    )

    def one_done_one_running() -> bool:
        try:
            found = states(trials_of("killed"))
        except storage.TuningStoreError:
            return False
        return "COMPLETE" in found and found[-1] == "RUNNING"

    assert wait_for(one_done_one_running, timeout=240)
    running = trials_of("killed")[-1]
    worker_pid = int(running.user_attrs["worker"].rsplit(":", 1)[1])
    os.kill(worker_pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "SIGKILL" in output
    after = trials_of("killed")
    assert states(after)[: len(after) - 1].count("COMPLETE") >= 1
    assert after[running.number].state.name == "FAIL"  # marked at once by the coordinator
    assert f"its worker (process {worker_pid}) ended" in after[running.number].user_attrs[results.FAILED_ATTR]
    job = sorted(search.jobs_root().glob("*-tune-killed"))[-1]
    assert lifecycle.state_of(job).state == "failed" and "SIGKILL" in lifecycle.state_of(job).error
    completed_before = [t.number for t in after if t.state.name == "COMPLETE"]

    goes_on = tune("--study", "killed", "--trials", "1", *SLOWER)  # the same budget
    assert goes_on.returncode == 0, goes_on.stderr
    final = trials_of("killed")
    assert [t.number for t in final if t.state.name == "COMPLETE"][
        : len(completed_before)
    ] == completed_before
    assert final[-1].state.name == "COMPLETE"


def test_a_trial_whose_whole_search_was_killed_is_failed_by_the_next_search(dataset):
    proc = command(
        "tune",
        "--study",
        "orphan",
        "--trials",
        "2",
        *SLOWER,
        "--heartbeat",
        "1",
        quiet=True,
        start_new_session=True,
    )

    def running() -> bool:  # and training: its heartbeat is recorded by then (Optuna's stale check needs one)
        try:
            return any(t.state.name == "RUNNING" and "run" in t.user_attrs for t in trials_of("orphan"))
        except storage.TuningStoreError:
            return False

    assert wait_for(running, timeout=240)
    os.killpg(proc.pid, signal.SIGKILL)  # coordinator and worker at once: nobody marks the trial
    proc.wait()
    # at once, within the grace period (3 heartbeats of 1 s): the search checks again while it runs
    goes_on = tune("--study", "orphan", "--trials", "1", *SLOWER, "--heartbeat", "1")
    assert goes_on.returncode == 0, goes_on.stderr
    assert states(trials_of("orphan"))[0] == "FAIL" and states(trials_of("orphan"))[-1] == "COMPLETE"


def test_a_trial_whose_coordinator_was_killed_fails_with_the_reason_and_its_worker_ends(dataset):
    proc = command(
        "tune", "--study", "headless", "--trials", "3", *SLOWER, quiet=True, start_new_session=True
    )

    def training() -> bool:
        try:
            return any(t.state.name == "RUNNING" and "run" in t.user_attrs for t in trials_of("headless"))
        except storage.TuningStoreError:
            return False

    assert wait_for(training, timeout=240)
    proc.kill()  # the coordinator alone: its worker is told (SIGTERM) and stops the trial's run
    proc.wait()
    assert wait_for(lambda: "RUNNING" not in states(trials_of("headless")), timeout=120)
    time.sleep(3)  # no further ticket is taken
    trials = trials_of("headless")
    assert states(trials) == ["FAIL"]  # not "pruned" or "stopped": nobody stopped it
    assert "its search was killed" in trials[0].user_attrs[results.FAILED_ATTR]


def test_a_worker_whose_search_died_before_it_could_be_told_takes_no_ticket(tmp_path):
    """The kernel tells a worker of its coordinator's death only once the worker has asked (just after the
    fork); a worker whose coordinator died before then is an orphan, and must not go on taking tickets."""
    job = tmp_path / "job"
    job.mkdir()
    runs.write_json(job / search.TICKETS_FILE, {"left": 2})
    gone = subprocess.Popen(["true"])
    gone.wait()  # a coordinator that has ended: not this worker's parent
    done = tune("--worker", "0", "--run-dir", str(job), "--coordinator", str(gone.pid), timeout=120)
    assert done.returncode == 1 and "has ended; no trial taken" in done.stdout, done.stderr
    assert runs.read_json(job / search.TICKETS_FILE)["left"] == 2


def test_a_trial_has_its_first_heartbeat_before_its_run_so_a_kill_at_any_moment_can_be_failed(
    tmp_path, monkeypatch
):
    """Optuna's heartbeat thread can lose SQLite's lock to the trial's own writes; a worker killed before
    that thread's first beat left a trial "running" for good (CI once saw it). The objective writes the first
    beat itself: a worker that dies as its run is being made (no heartbeat thread at all here) is failed by
    the next search's stale check once the grace period has passed."""
    from fashion_lib.training import engine

    store = storage.open_store(f"sqlite:///{tmp_path}/beat.db", heartbeat=1)
    tc = TuneConfig(study="beat", model="baseline", trials=1, subset=200, epochs=1)
    study = search.open_study(tc, store, create=True)

    class Killed(BaseException):  # what SIGKILL looks like from inside: nothing after it runs
        pass

    def killed(cfg):
        raise Killed

    monkeypatch.setattr(engine, "start_run", killed)
    trial = study.ask()
    with pytest.raises(Killed):
        search.objective_for(tc, tc.space(), store)(trial)
    assert states(study.get_trials()) == ["RUNNING"]
    time.sleep(4.5)  # past the grace period (3 beats of 1 s, measured by SQLite to the second)
    optuna.storages.fail_stale_trials(study)
    assert states(study.get_trials()) == ["FAIL"]


def test_two_workers_share_one_sqlite_study(dataset):
    narrowed = ("--range", "learning_rate=0.003:0.01")  # leaves out the default 0.001: no trial 0 of it
    done = tune("--study", "pair", "--trials", "4", "--workers", "2", *TINY, "--pruner", "none", *narrowed)
    assert done.returncode == 0, done.stderr
    trials = trials_of("pair")
    assert states(trials) == ["COMPLETE"] * 4  # exactly as many as asked for
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert "no trial of the default settings" in done.stdout
    assert not any(results.DEFAULTS_ATTR in t.user_attrs for t in trials)
    assert all(0.003 <= t.params["learning_rate"] <= 0.01 for t in trials)


# ------------------------------------------------------------------------------------ the database


def test_a_damaged_database_and_an_unknown_study_get_clear_messages(tmp_path):
    damaged = tmp_path / "studies.db"
    damaged.write_bytes(b"this is not SQLite" * 100)
    env = {"FASHION_TUNING_DB": f"sqlite:///{damaged}"}
    listed = studies(env=env)
    assert listed.returncode == 2 and "is damaged" in listed.stderr and "Traceback" not in listed.stderr
    started = tune("--study", "x", *TINY, env=env)
    assert started.returncode == 2 and "is damaged" in started.stderr and "Traceback" not in started.stderr
    unknown = studies("--study", "nope", env={"FASHION_TUNING_DB": f"sqlite:///{tmp_path / 'fresh.db'}"})
    assert unknown.returncode == 2 and "No study named 'nope'" in unknown.stderr


def test_a_tuning_folder_that_is_a_file_and_a_database_that_is_a_folder_get_clear_messages(tmp_path):
    (tmp_path / "tuning").write_text("not a folder")
    home = {"FASHION_HOME": str(tmp_path)}
    started = tune("--study", "x", *TINY, env=home)
    assert started.returncode == 2 and "cannot write the search's job folder" in started.stderr
    assert "Traceback" not in started.stderr
    with pytest.raises(storage.TuningStoreError, match="Cannot make the folder of the tuning database"):
        storage.open_store(f"sqlite:///{tmp_path}/tuning/studies.db")
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(storage.TuningStoreError, match="is a folder, not a database file"):
        storage.open_store(f"sqlite:///{tmp_path}/folder.db")


def test_a_record_damaged_by_hand_gets_a_clear_message(tmp_path):
    db = tmp_path / "s.db"
    stored_study(storage.open_store(f"sqlite:///{db}"))
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE trial_user_attributes SET value_json = '{bad' WHERE key = 'run'")
    shown = studies("--study", "stored", env={"FASHION_TUNING_DB": f"sqlite:///{db}"})
    assert shown.returncode == 2 and "holds a damaged record (not JSON" in shown.stderr
    assert "Traceback" not in shown.stderr


def test_a_database_damaged_while_a_search_reads_it_gets_a_clear_message(tmp_path, monkeypatch):
    store = storage.open_store(f"sqlite:///{tmp_path / 's.db'}")

    def broken(*args, **kwargs):
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.")

    with pytest.raises(
        storage.TuningStoreError, match="failed while a search wrote to it: it may have been damaged"
    ):
        storage.guarded(store, broken)


def test_a_locked_database_gets_a_clear_message(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    store = storage.open_store(url)
    optuna.create_study(study_name="held", storage=store.storage)
    monkeypatch.setattr(storage, "SQLITE_WAIT_S", 0.5)
    holder = sqlite3.connect(tmp_path / "locked.db", timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # another program writing
    try:
        with pytest.raises(storage.TuningStoreError, match="locked by another program"):
            storage.study_summaries(storage.open_store(url))
    finally:
        holder.rollback()
        holder.close()


def test_a_lock_held_while_a_search_writes_is_called_a_lock_not_damage(tmp_path):
    """Optuna wraps SQLite's "database is locked" in its StorageInternalError, whose words blame the data:
    the search ended telling the user to move a healthy database away."""
    import sqlalchemy.exc

    store = storage.open_store(f"sqlite:///{tmp_path / 's.db'}")

    def locked(*args, **kwargs):
        try:
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("database is locked"))
        except sqlalchemy.exc.OperationalError as exc:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc

    with pytest.raises(storage.TuningStoreError, match="is locked by another program; try again"):
        storage.guarded(store, locked)


@pytest.mark.parametrize(
    ("url", "hidden"),
    [
        ("postgresql+psycopg2://u:p@ss@h/x", "ss@h"),  # an unencoded '@' showed the password's end
        ("postgresql+psycopg2://:secret@h/x", "secret"),  # no user: nothing was hidden
        ("postgresql+psycopg2://127.0.0.1:1/x?user=u&password=topsecret", "topsecret"),
        ("postgresql+psycopg2://u:pw@h:5432/db", ":pw@"),
        ("postgresql+psycopg2://u:pa?ss@h/db", "pa?ss"),  # SQLAlchemy takes it; the query split showed it
    ],
)
def test_a_database_password_never_shows(url, hidden):
    shown = config.redacted_url(url)
    assert hidden not in shown and "***" in shown


def test_a_sqlite_path_is_shown_as_it_is():
    assert config.redacted_url("sqlite:////home/a:b@c/x.db") == "sqlite:////home/a:b@c/x.db"


def test_a_study_without_trials_a_foreign_one_and_a_null_value_are_messages(tmp_path):
    """A study with no trial yet printed an empty frame; a multi-objective study and a trial value of NULL
    (written by another program) were tracebacks."""
    db = tmp_path / "s.db"
    store = storage.open_store(f"sqlite:///{db}")
    optuna.create_study(study_name="empty", storage=store.storage, direction="maximize")
    foreign = optuna.create_study(study_name="mo", storage=store.storage, directions=["maximize", "minimize"])
    foreign.add_trial(optuna.trial.create_trial(values=[0.5, 1.0]))
    stored_study(store)
    env = {"FASHION_TUNING_DB": f"sqlite:///{db}"}
    empty = studies("--study", "empty", env=env)
    assert empty.returncode == 0 and "study 'empty' has no trial yet" in empty.stdout
    mo = studies("--study", "mo", env=env)
    assert mo.returncode == 2 and "has 2 objectives: it was not made by this app" in mo.stderr
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE trial_values SET value = NULL WHERE trial_id = 3")
    listed = studies(env=env)  # every study is still listed
    assert listed.returncode == 0 and {"empty", "mo", "stored"} <= set(listed.stdout.split())
    shown = studies("--study", "stored", env=env)
    assert shown.returncode == 2 and "holds a damaged record" in shown.stderr
    with sqlite3.connect(db) as connection:  # a study's own record damaged: the others are still listed
        connection.execute("UPDATE study_user_attributes SET value_json = '{oops' WHERE key = 'model'")
    still = studies(env=env)
    assert still.returncode == 0 and {"empty", "mo", "stored"} <= set(still.stdout.split())
    assert "Traceback" not in empty.stderr + mo.stderr + listed.stderr + shown.stderr + still.stderr


def test_the_apps_own_mistake_inside_a_database_call_is_not_blamed_on_the_database(tmp_path):
    store = storage.open_store(f"sqlite:///{tmp_path / 's.db'}")

    def ours():
        raise TypeError("a bug of ours")

    with pytest.raises(TypeError, match="a bug of ours"):
        storage.guarded(store, ours)


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server (Debian's package) on a free port with a temporary data directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    if not found[-1]:
        pytest.skip(
            "PostgreSQL is not installed here (Debian's 'postgresql'; ./scripts/dev.sh test installs it)"
        )
    bindir = Path(found[-1]).parent
    data = Path(tempfile.mkdtemp(prefix="fashion-pg-", dir="/tmp"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def run(*cmd) -> None:
        subprocess.run(as_postgres + [str(c) for c in cmd], check=True, capture_output=True, timeout=120)

    run(bindir / "initdb", "-D", data / "db", "-A", "trust", "-U", "postgres", "--no-sync")
    run(
        bindir / "pg_ctl",
        "-D",
        data / "db",
        "-l",
        data / "server.log",
        "-w",
        "start",
        "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
    )
    try:
        run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "fashion")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/fashion"
    finally:
        subprocess.run(
            [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


def test_two_workers_share_one_study_on_postgresql(postgres_url, dataset):
    env = {"FASHION_TUNING_DB": postgres_url}
    done = tune("--study", "shared", "--trials", "3", "--workers", "2", *TINY, env=env)
    assert done.returncode == 0, done.stderr
    trials = trials_of("shared", postgres_url)
    assert states(trials) == ["COMPLETE"] * 3 and len({t.user_attrs["worker"] for t in trials}) == 2
    # a second machine would run the very same command against the same URL: it joins the study
    joined = tune("--study", "shared", "--trials", "1", *TINY, env=env)
    assert joined.returncode == 0 and len(trials_of("shared", postgres_url)) == 4
    assert [s.name for s in storage.study_summaries(storage.open_store(postgres_url))] == ["shared"]


# ----------------------------------------------------------------------------------------- results


def test_the_trial_table_and_figures_come_from_the_database(tmp_path):
    store = storage.open_store(f"sqlite:///{tmp_path / 's.db'}")
    study = stored_study(store)
    table = results.trial_table(study)
    assert list(table["trial"]) == [0, 1, 2, 3] and list(table["state"]) == [
        "complete",
        "complete",
        "pruned",
        "complete",
    ]
    assert table.loc[2, "pruned after epoch"] == 1 and table.loc[1, "validation accuracy"] == 0.9
    assert results.best_trial(study).number == 1
    assert list(table["settings"]) == ["defaults", "searched", "searched", "searched"]
    assert results.against_defaults(study) == (0.85, 0.90, 1)
    assert results.against_defaults_text(study) == (
        "Best searched trial (1): 90.00 % validation accuracy, better than the default settings' 85.00 % "
        "on the same images and budget (+5.00 points)."
    )
    assert results.state_counts(table) == {"complete": 3, "pruned": 1, "failed, stopped or running": 0}
    assert results.state_counts(table.iloc[:0]) == {
        "complete": 0,
        "pruned": 0,
        "failed, stopped or running": 0,
    }
    rows = results.study_rows(storage.study_summaries(store))
    assert rows == [
        {
            "study": "stored",
            "model": "Baseline CNN",
            "trials": 4,
            "best validation accuracy": 0.9,
            "best trial": 1,
        }
    ]
    charts = results.study_figures(study)
    assert tuple(charts) == results.CHART_NAMES
    assert all(not isinstance(fig, str) for fig in charts.values())  # every chart drawn
    greys = [t for t in charts["Intermediate values"].data if t.line.color == "#b0b0b0"]
    assert [t.name for t in greys] == ["trial 2 (pruned)"]


def test_a_search_that_changes_the_space_keeps_what_the_earlier_trials_searched(tmp_path):
    store = storage.open_store(f"sqlite:///{tmp_path / 's.db'}")
    study = stored_study(store)  # 4 trials: learning rate as declared, batch 64 or 128, no augmentation
    same = TuneConfig(study="stored", fixed={"augment_strength": 0.0}, ranges={"batch_size": "64,128"})
    search.open_study(same, store, create=True)
    assert results.space_changes(storage.load_study(store, "stored")) == []  # the same space: nothing to say
    other = TuneConfig(study="stored", ranges={"learning_rate": "0.001:0.005", "batch_size": "64,128"})
    study = search.open_study(other, store, create=True)
    assert results.space_of(study) == other.space()  # the table shows what the latest search searches
    assert results.space_changes(study) == [
        "Trials 0–3 searched another space: learning_rate 0.0001 … 0.01 (log scale) (from trial 4: "
        "0.001 … 0.005 (log scale)); augment_strength fixed at 0.0 (from trial 4: 0 … 0.3)."
    ]
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    study = search.open_study(same, store, create=True)  # and back, after one more trial
    assert results.space_changes(study)[1] == (
        "Trial 4 searched another space: learning_rate 0.001 … 0.005 (log scale) (from trial 5: 0.0001 … "
        "0.01 (log scale)); augment_strength 0 … 0.3 (from trial 5: fixed at 0.0)."
    )
    study.set_user_attr(results.EARLIER_SPACES_ATTR, [{"before_trial": "x"}, 7])  # damaged: left out
    assert results.space_changes(study) == []
    reworded = [{**p, "help": "reworded"} for p in study.user_attrs["space"]]
    study.set_user_attr("space", reworded)  # a help text changed between versions: no other space
    search.open_study(same, store, create=True)
    assert study.user_attrs[results.EARLIER_SPACES_ATTR] == [{"before_trial": "x"}, 7]


def test_a_study_keeps_its_choices_and_its_training_settings_and_fixing_never_reaches_the_search_settings(
    tmp_path,
):
    store = storage.open_store(f"sqlite:///{tmp_path / 's.db'}")
    stored_study(store)  # batch size searched among 64 and 128
    for ranges in ({}, {"batch_size": "64,256"}, {"batch_size": "64,128,256"}):
        # Optuna would fail every trial ("CategoricalDistribution does not support dynamic value space")
        tc = TuneConfig(study="stored", ranges=ranges)
        with pytest.raises(ValueError, match="searched batch_size among 64, 128, and a study cannot change"):
            search.open_study(tc, store, create=True)
        assert "cannot change its choices" in search.continuing(store, tc)[1]
    typed = TuneConfig(study="stored", ranges={"batch_size": "128,64"})  # the same choices, typed otherwise
    assert search.continuing(store, typed)[1] is None
    one = TuneConfig(study="stored", ranges={"batch_size": "64"})  # one choice: a fixed value
    assert search.continuing(store, one)[1] is None
    fixed = TuneConfig(study="stored", fixed={"batch_size": 256})  # fixed: not searched, so allowed
    assert search.open_study(fixed, store, create=True).user_attrs["settings"]["fixed"] == {"batch_size": 256}
    tc, problem = search.continuing(store, TuneConfig(study="stored", ranges={"batch_size": "64,128"}))
    assert problem is None and tc is not None
    # a fixed training setting that is not a search parameter makes other trials: refused, like the budget
    optimizer = TuneConfig(study="stored", ranges={"batch_size": "64,128"}, fixed={"optimizer": "sgd"})
    with pytest.raises(ValueError, match=r"optimizer adam \(now sgd\)"):
        search.open_study(optimizer, store, create=True)
    same_training = TuneConfig(study="stored", ranges={"batch_size": "64,128"}, fixed={"optimizer": "adam"})
    search.open_study(same_training, store, create=True)  # the default, named: the trials train the same
    tc, problem = search.continuing(store, TuneConfig(study="stored", ranges={"batch_size": "64,128"}))
    assert problem is None and tc.fixed == {"optimizer": "adam"}  # the page keeps the study's settings
    # a study stored before fixing the search's own settings was refused: read as its trials trained
    old = results.settings_of(storage.load_study(store, "stored")).to_dict()
    old["fixed"] = {**old["fixed"], "epochs": 7, "seed": 3, "model": "mobilenet_v2", "evaluate_test": True}
    read = TuneConfig.from_dict(old)
    assert (read.epochs, read.seed, read.model, read.fixed) == (7, 3, "baseline", {"optimizer": "adam"})
    for name, value in (("val_fraction", 0.3), ("seed", 7), ("subset", 400), ("epochs", 50)):
        with pytest.raises(ValueError, match=f"{name} cannot be fixed: the search itself sets it"):
            TuneConfig(study="stored", fixed={name: value})
    with pytest.raises(ValueError, match="evaluate_test, model cannot be fixed"):
        TuneConfig(study="stored", fixed={"model": "mobilenet_v2", "evaluate_test": True})


def stored_study(store, name: str = "stored"):
    """A small study written straight into the database: three completed trials and one pruned."""
    tc = TuneConfig(study=name, fixed={"augment_strength": 0.0}, ranges={"batch_size": "64,128"})
    study = optuna.create_study(study_name=name, storage=store.storage, direction="maximize")
    study.set_user_attr("model", tc.model)
    study.set_user_attr("space", spaces.space_to_json(tc.space()))
    study.set_user_attr("settings", tc.to_dict())
    dists = {
        "learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "dropout": optuna.distributions.FloatDistribution(0.1, 0.5),
        "batch_size": optuna.distributions.CategoricalDistribution([64, 128]),
    }
    for lr, dropout, batch, value, state, steps in (
        (1e-3, 0.2, 64, 0.85, "COMPLETE", [0.80, 0.85]),
        (3e-3, 0.3, 128, 0.90, "COMPLETE", [0.86, 0.90]),
        (1e-4, 0.4, 64, None, "PRUNED", [0.40]),
        (5e-3, 0.1, 128, 0.88, "COMPLETE", [0.84, 0.88]),
    ):
        study.add_trial(
            optuna.trial.create_trial(
                params={"learning_rate": lr, "dropout": dropout, "batch_size": batch},
                distributions=dists,
                value=value,
                state=getattr(optuna.trial.TrialState, state),
                intermediate_values={i + 1: v for i, v in enumerate(steps)},
                user_attrs={"run": f"20260101-00000{len(study.trials)}-baseline"}
                | ({"pruned_at_epoch": 1} if state == "PRUNED" else {})
                | ({results.DEFAULTS_ATTR: True} if not study.trials else {}),
            )
        )
    return study


def test_stopping_one_trials_run_prunes_that_trial_and_the_search_goes_on(dataset):
    proc = command("tune", "--study", "one-stopped", "--trials", "3", *SLOWER, "--pruner", "none")

    def first_trial_training() -> bool:
        try:
            trials = trials_of("one-stopped")
        except storage.TuningStoreError:
            return False
        run = trials and trials[0].user_attrs.get("run")
        return bool(run) and lifecycle.effective_state(config.runs_dir() / run) == "running"

    assert wait_for(first_trial_training, timeout=240)
    first_run = config.runs_dir() / trials_of("one-stopped")[0].user_attrs["run"]
    assert jobs.stop(first_run)  # the Stop button of that run on the Train page
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    trials = trials_of("one-stopped")
    assert states(trials) == ["PRUNED", "COMPLETE", "COMPLETE"]  # the other tickets were still used
    assert trials[0].user_attrs["stopped_by_user"] and lifecycle.effective_state(first_run) == "stopped"
    assert list(results.trial_table(storage.load_study(storage.open_store(), "one-stopped"))["state"]) == [
        "stopped",
        "complete",
        "complete",
    ]


def test_a_search_whose_every_trial_fails_says_why_and_fails(tmp_path):
    failing = tune(
        "--study", "all-fail", "--trials", "2", *TINY,
        env={"FASHION_HOME": str(tmp_path), "FASHION_MNIST_DIR": str(tmp_path / "nothing")},
    )  # fmt: skip
    assert failing.returncode != 0
    assert "every trial failed: DataNotFoundError: FASHION_MNIST_DIR is set to" in failing.stderr
    assert failing.stdout.count("— DataNotFoundError") == 2  # each trial's line says why
    db = f"sqlite:///{tmp_path}/tuning/studies.db"
    table = results.trial_table(storage.load_study(storage.open_store(db), "all-fail"))
    assert list(table["state"]) == ["failed", "failed"] and table["why"].str.startswith("DataNotFound").all()


def test_a_continued_search_that_leaves_out_a_default_says_so(tmp_path):
    env = {"FASHION_HOME": str(tmp_path), "FASHION_MNIST_DIR": str(tmp_path / "nothing")}  # trials fail fast
    first = tune("--study", "dd", "--trials", "1", *TINY, env=env)
    assert first.returncode == 1 and "(the default settings)" in first.stdout  # its defaults trial failed
    narrowed = tune("--study", "dd", "--trials", "1", *TINY, "--range", "learning_rate=0.002:0.005", env=env)
    assert (
        "no trial of the default settings: the narrowed search space leaves some of them out"
        in narrowed.stdout
    )


def test_a_stop_that_comes_before_the_trials_run_exists_stops_that_run(tmp_path, monkeypatch):
    from fashion_lib.training import engine

    folder = tmp_path / "run"
    folder.mkdir()
    seen = []
    monkeypatch.setattr(engine, "start_run", lambda cfg: folder)
    monkeypatch.setattr(engine, "train", lambda run_dir, **_: seen.append(lifecycle.stop_requested(run_dir)))
    monkeypatch.setattr(search._Stop, "requested", True)  # SIGTERM while the run was being made
    store = storage.open_store(f"sqlite:///{tmp_path / 's.db'}", heartbeat=1)
    tc = TuneConfig(study="early-stop", trials=1, subset=200, epochs=1)
    study = search.open_study(tc, store, create=True)
    study.optimize(search.objective_for(tc, tc.space(), store), n_trials=1)
    assert seen == [True]  # the run was told to stop before it trained
    assert results.state_name(study.trials[0]) == "stopped"
    # a run that failed while the stop was pending failed: its error is kept, not called a stop
    monkeypatch.setattr(lifecycle, "effective_state", lambda folder: lifecycle.FAILED)
    monkeypatch.setattr(
        lifecycle,
        "state_of",
        lambda folder: lifecycle.RunState("failed", "failed", error="MemoryError: out of memory"),
    )
    study.optimize(search.objective_for(tc, tc.space(), store), n_trials=1, catch=(Exception,))
    assert study.trials[1].state.name == "FAIL"
    assert "failed: MemoryError: out of memory" in study.trials[1].user_attrs[results.FAILED_ATTR]


def test_a_defaults_trial_that_failed_is_tried_again_by_the_next_search(tmp_path):
    store = storage.open_store(f"sqlite:///{tmp_path / 's.db'}")
    tc = TuneConfig(study="lost", subset=200, epochs=1)
    study = search.open_study(tc, store, create=True)
    (waiting,) = study.get_trials()
    assert waiting.state.name == "WAITING" and waiting.user_attrs[results.DEFAULTS_ATTR]
    search.open_study(tc, store, create=True)
    assert len(study.get_trials()) == 1  # still waiting: not enqueued twice
    store.storage.set_trial_state_values(waiting._trial_id, optuna.trial.TrialState.RUNNING)
    store.storage.set_trial_state_values(waiting._trial_id, optuna.trial.TrialState.FAIL)
    study = search.open_study(tc, store, create=True)
    assert [(t.state.name, bool(t.user_attrs.get(results.DEFAULTS_ATTR))) for t in study.get_trials()] == [
        ("FAIL", True),
        ("WAITING", True),
    ]
    assert study.get_trials()[1].params == {} and study.get_trials()[1].system_attrs["fixed_params"] == (
        tc.defaults_reference()
    )
    search.open_study(tc, store, create=True)
    assert len(study.get_trials()) == 2  # waiting again: once is enough


def test_a_defaults_trial_the_pruner_stopped_or_one_of_other_settings_is_not_tried_again(tmp_path):
    store = storage.open_store(f"sqlite:///{tmp_path / 's.db'}")
    tc = TuneConfig(study="judged", subset=200, epochs=1)
    study = search.open_study(tc, store, create=True)
    (trial,) = study.get_trials()
    store.storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.RUNNING)
    store.storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.PRUNED)  # by the pruner
    search.open_study(tc, store, create=True)
    assert states(study.get_trials()) == ["PRUNED"]  # its value was judged: not lost
    other = TuneConfig(study="stopped", subset=200, epochs=1)
    study = search.open_study(other, store, create=True)
    (trial,) = study.get_trials()
    store.storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.RUNNING)
    store.storage.set_trial_user_attr(trial._trial_id, results.STOPPED_ATTR, True)
    store.storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.PRUNED)  # by a person
    dropout = TuneConfig(study="stopped", subset=200, epochs=1, fixed={"dropout": 0.3})  # not the defaults
    search.open_study(dropout, store, create=True)
    assert states(study.get_trials()) == ["PRUNED"]  # it would not be the defaults' trial
    search.open_study(other, store, create=True)
    assert states(study.get_trials()) == ["PRUNED", "WAITING"]


def test_a_search_stopped_while_it_starts_ends_stopped_not_failed(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_TUNING_DB", f"sqlite:///{tmp_path / 'fresh.db'}")
    job = search.create_job(TuneConfig(study="stopped-early", subset=200, epochs=1, trials=2))
    proc = jobs.launch(job, kind="tune")
    assert jobs.stop(job)  # at once: the process has not even claimed the job yet
    proc.wait(timeout=120)
    state = lifecycle.state_of(job)
    assert state.state == "stopped" and state.error is None


def test_the_median_pruner_waits_a_third_of_the_epochs_before_it_stops_a_slow_starter():
    study = optuna.create_study(direction="maximize", pruner=search.make_pruner("median", 12))
    for _ in range(3):  # three finished trials that were good from the start
        good = study.ask()
        for step in range(1, 13):
            good.report(0.9, step)
        study.tell(good, 0.9)
    slow = study.ask()
    verdicts = []
    for step in range(1, 6):
        slow.report(0.5, step)
        verdicts.append(slow.should_prune())
    assert search.pruning_warmup(12) == 4
    assert verdicts == [False, False, False, True, True]  # judged from epoch 4, not epoch 2
    assert search.pruning_warmup(3) == 2 and search.pruning_warmup(10) == 4
    # a transfer model's trial reports both stages: 5 head + 2 fine-tuning epochs
    assert TuneConfig(study="s", model="mobilenet_v2", epochs=5).base_config().planned_epochs == 7


@pytest.mark.parametrize(
    "stored",
    [
        {"fixed": {"conv_filters": [16, 32, 64]}},  # accepted before, set by filters1–3 in every trial
        {"fixed": {"augment": {"rotation": 0.05}}},
        {"fixed": {"batch_size": 7}},  # outside today's choices
        {"timeout": float("nan")},  # meant no limit
        {"subset": 2000.0},
    ],
)
def test_an_earlier_studys_settings_still_read_as_its_trials_ran(tmp_path, stored):
    """Settings these rules refuse made a study of one's own read as "made elsewhere": its winner could not
    be retrained, and a new search skipped the budget check (another split and seed added silently)."""
    store = storage.open_store(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="old", storage=store.storage, direction="maximize")
    base = TuneConfig(study="old", subset=2000, epochs=3, val_fraction=0.3, seed=7).to_dict()
    settings = {**base, **stored}
    study.set_user_attr("settings", settings)
    read = results.settings_of(study)
    assert read is not None and (read.val_fraction, read.seed, read.subset) == (0.3, 7, 2000)
    assert "conv_filters" not in read.fixed and "augment" not in read.fixed and "batch_size" not in read.fixed
    again, why = search.continuing(store, TuneConfig(study="old", subset=2000, epochs=3))
    assert why is None and (again.val_fraction, again.seed) == (0.3, 7)  # the study's own split, as before


def test_a_study_whose_settings_cannot_be_read_takes_no_new_trials(tmp_path):
    store = storage.open_store(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="odd", storage=store.storage, direction="maximize")
    study.set_user_attr("settings", {**TuneConfig(study="odd").to_dict(), "pruner": "coin"})
    again, why = search.continuing(store, TuneConfig(study="odd"))
    assert again is None and "keeps settings this version cannot read" in why
