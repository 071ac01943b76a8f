"""Tuning page (AppTest): a small stored study — every chart, the table as in the database, a trial's
curves; a damaged database; starting a search."""

from __future__ import annotations

import shutil

import pytest

from fashion_lib import config, train, wording
from fashion_lib.tuning import results, storage
from fashion_lib.tuning.config import FINAL_EPOCHS
from tests.app.conftest import page_test
from tests.unit.test_tuning import stored_study


@pytest.fixture
def study(tmp_path, monkeypatch, trained_run):
    """A fresh FASHION_HOME whose database holds the small stored study; each trial has a run folder."""
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FASHION_TUNING_DB", raising=False)
    study = stored_study(storage.open_store())
    for trial in study.trials:
        shutil.copytree(trained_run, config.runs_dir() / trial.user_attrs["run"])
    return study


def test_the_explorer_shows_the_stored_study(study, dataset):
    at = page_test("tuning.py").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Trials"] == "4" and metrics["Complete"] == "3" and metrics["Pruned"] == "1"
    assert metrics["Best validation accuracy"] == wording.percent(0.90)
    table = next(d.value for d in at.dataframe if "trial" in d.value.columns)
    expected = results.trial_table(study)
    assert list(table["trial"]) == list(expected["trial"]) and list(table["state"]) == list(expected["state"])
    assert list(table["validation accuracy"].fillna(-1)) == list(expected["validation accuracy"].fillna(-1))
    assert list(table["settings"]) == ["defaults", "searched", "searched", "searched"]
    assert results.against_defaults_text(study) in [c.value for c in at.caption]  # best vs the defaults
    assert [t.label for t in at.tabs] == list(results.CHART_NAMES)
    studies = next(d.value for d in at.dataframe if "study" in d.value.columns)  # every study, counted
    assert studies.to_dict("records") == results.study_rows(storage.study_summaries(storage.open_store()))
    assert at.selectbox(key="tu_pick").options == ["stored — Baseline CNN"]  # no counts: they change
    assert not any("needs at least" in c.value or "cannot be drawn" in c.value for c in at.caption)
    text = "\n".join(md.value for md in at.markdown)
    assert "**Trial 1** (complete)" in text  # the best trial's curves open by default
    space = next(
        d.value for d in at.dataframe if "parameter" in d.value.columns and "searched" in d.value.columns
    )
    assert dict(zip(space["parameter"], space["searched"], strict=True))["batch_size"] == "one of 64, 128"
    assert dict(zip(space["parameter"], space["searched"], strict=True))["augment_strength"] == "fixed at 0.0"


def test_the_explorer_says_what_earlier_trials_searched_when_a_later_search_changed_the_space(study, dataset):
    from fashion_lib.tuning import search
    from fashion_lib.tuning.config import TuneConfig

    search.open_study(
        TuneConfig(study="stored", ranges={"dropout": "0.2:0.4", "batch_size": "64,128"}),
        storage.open_store(),
        create=True,
    )
    at = page_test("tuning.py").run()
    assert not at.exception
    space = next(
        d.value for d in at.dataframe if "parameter" in d.value.columns and "searched" in d.value.columns
    )
    assert dict(zip(space["parameter"], space["searched"], strict=True))["dropout"] == "0.2 … 0.4"
    said = [c.value for c in at.caption if c.value.startswith("Trials 0–3 searched another space")]
    assert len(said) == 1 and "dropout 0.1 … 0.5 (from trial 4: 0.2 … 0.4)" in said[0]


def test_training_the_winner_starts_a_full_data_run(study, dataset, monkeypatch):
    from fashion_lib import jobs

    started = []
    monkeypatch.setattr(jobs, "start", lambda folder, queue=False, kind="train": started.append(folder))
    at = page_test("tuning.py").run()
    at.button(key="tu_final").click().run()
    assert not at.exception and len(started) == 1
    cfg = train.TrainConfig.from_run(started[0])
    assert cfg.subset == 0 and cfg.evaluate_test and cfg.learning_rate == pytest.approx(3e-3)  # trial 1's
    assert cfg.epochs == FINAL_EPOCHS == 20  # the stored study's trials ran fewer: the bench's retraining
    assert at.session_state["tr_run_pick"] == started[0].name


def test_training_the_winner_when_it_cannot_start_is_a_message(study, dataset, monkeypatch):
    """Refusals while creating the final run (here: its ImageNet weights are gone) reach the user as the
    page's error, as on the Train page; nothing is left behind."""
    from fashion_lib import config, models
    from fashion_lib.training import engine

    def no_weights(model, weights):
        raise models.WeightsUnavailableError("no ImageNet weights for mobilenet_v2 here")

    monkeypatch.setattr(engine.models, "resolve_weights", no_weights)
    before = sorted(config.runs_dir().glob("*"))
    at = page_test("tuning.py").run()
    at.button(key="tu_final").click().run()
    assert not at.exception
    assert any("no ImageNet weights" in e.value for e in at.error)
    assert sorted(config.runs_dir().glob("*")) == before and "tr_run_pick" not in at.session_state


def test_a_trial_whose_run_lost_or_damaged_its_curves_says_so(study, dataset):
    best_run = config.runs_dir() / study.trials[1].user_attrs["run"]  # the best trial opens by default
    (best_run / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5}\nnot json\n{"epoch": 2}\n')
    at = page_test("tuning.py").run()
    assert not at.exception
    assert (
        "This trial's run folder is damaged" in at.warning[0].value
        and "line 2 is not JSON" in at.warning[0].value
    )
    (best_run / "metrics.jsonl").unlink()
    at = page_test("tuning.py").run()
    assert not at.exception and not at.warning
    assert any("no finished epoch to draw" in c.value for c in at.caption)


def test_a_damaged_database_is_a_message_not_a_traceback(tmp_path, monkeypatch, dataset):
    damaged = tmp_path / "studies.db"
    damaged.write_bytes(b"garbage" * 1000)
    monkeypatch.setenv("FASHION_TUNING_DB", f"sqlite:///{damaged}")
    at = page_test("tuning.py").run()
    assert not at.exception and "is damaged" in at.error[0].value


@pytest.mark.parametrize("kind", ["no trial yet", "another program's, with two objectives", "a NULL value"])
def test_a_study_the_page_cannot_show_whole_is_a_message_not_a_traceback(
    tmp_path, monkeypatch, dataset, kind
):
    """Each was a traceback: KeyError 'state' for a study whose search had not finished a trial (every new
    search without the defaults trial, for its first seconds), RuntimeError for a multi-objective study,
    AssertionError on loading the page for a trial value of NULL (every study unusable)."""
    import sqlite3

    import optuna

    db = tmp_path / "s.db"
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FASHION_TUNING_DB", f"sqlite:///{db}")
    store = storage.open_store()
    stored_study(store)
    if kind == "no trial yet":
        optuna.create_study(study_name="odd", storage=store.storage, direction="maximize")
    elif kind.startswith("another"):
        odd = optuna.create_study(
            study_name="odd", storage=store.storage, directions=["maximize", "minimize"]
        )
        odd.add_trial(optuna.trial.create_trial(values=[0.5, 1.0]))
    else:
        stored_study(store, "odd")
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE trial_values SET value = NULL WHERE trial_id = 6")
    at = page_test("tuning.py")
    at.session_state["tu_pick"] = "odd"
    at.run()
    assert not at.exception
    if kind == "no trial yet":
        assert next(m for m in at.metric if m.label == "Trials").value == "0"
    else:
        assert at.error and ("2 objectives" in at.error[0].value or "damaged record" in at.error[0].value)
    at.session_state["tu_pick"] = "stored"  # the other studies still open
    at.run()
    assert not at.exception and next(m for m in at.metric if m.label == "Trials").value == "4"


def test_a_tuning_folder_that_is_a_file_is_a_message_not_a_traceback(tmp_path, monkeypatch, dataset):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    monkeypatch.delenv("FASHION_TUNING_DB", raising=False)
    (tmp_path / "tuning").write_text("not a folder")
    at = page_test("tuning.py").run()
    assert not at.exception and "Cannot make the folder of the tuning database" in at.error[0].value


def test_starting_a_search_from_the_page_creates_a_job(tmp_path, monkeypatch, dataset):
    from fashion_lib import jobs
    from fashion_lib.tuning import search

    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))
    started = []
    monkeypatch.setattr(
        jobs, "start", lambda folder, queue=False, kind="train": started.append((folder, kind))
    )
    at = page_test("tuning.py").run()
    assert any("No study yet" in i.value for i in at.info)
    at.text_input(key="tu_study").set_value("from-the-page").run()
    at.number_input(key="tu_trials").set_value(3)
    at.checkbox(key="tu_defaults_first").uncheck()
    at.button(key="tu_launch").click().run()  # typed and pressed in one interaction: 3 trials reach it
    assert not at.exception and len(started) == 1 and started[0][1] == "tune"
    settings = search.TuneConfig.from_file(started[0][0] / "config.json")
    assert settings.study == "from-the-page" and settings.trials == 3 and not settings.defaults_first


def test_a_running_search_shows_its_box_and_says_where_a_command_lines_progress_goes(study, dataset):
    from fashion_lib import lifecycle, processes
    from fashion_lib.tuning import search
    from fashion_lib.tuning.config import TuneConfig

    job = search.create_job(TuneConfig(study="stored", ranges={"batch_size": "64,128"}))
    with lifecycle.running(job, processes.current()):  # as `python -m fashion_lib tune` holds it
        at = page_test("tuning.py").run()
        assert not at.exception
        assert any(f"**Search {job.name}** — running" in md.value for md in at.markdown)
        assert "started from a command line" in at.code[0].value
        (job / "tune.log").write_text("study 'stored' (baseline, 4 earlier trials): 20 trials\n")
        at = page_test("tuning.py").run()  # a search the page started: its log
        assert "study 'stored' (baseline, 4 earlier trials)" in at.code[0].value
