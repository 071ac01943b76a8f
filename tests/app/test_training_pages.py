"""Train and Compare pages (AppTest): with no runs, with a shipped model, a completed run and a failed run."""

from __future__ import annotations

import shutil

import pytest

from fashion_lib import config, evaluate, export, pitfall, runs, wording
from tests.app.conftest import page_test
from tests.conftest import move_run
from tests.unit.test_train import tiny


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty FASHION_HOME and no shipped models."""
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(config, "CACHED_MODELS_DIR", tmp_path / "cached_models")
    return tmp_path


@pytest.fixture
def completed(home, trained_run):
    return shutil.copytree(trained_run, config.runs_dir() / trained_run.name)


@pytest.fixture
def failed(home):
    folder = runs.create_run(tiny().to_dict(), "20260101-000000-baseline-failed")
    move_run(folder, "failed", error="RuntimeError: out of memory while building the model")
    return folder


@pytest.fixture
def shipped(home, trained_run):
    return export.ship_run(trained_run, "baseline", target_root=config.CACHED_MODELS_DIR)


# ------------------------------------------------------------------------------------------ Train page


def test_train_page_with_no_runs_offers_the_form_and_an_estimate(home, dataset):
    at = page_test("training.py").run()
    assert not at.exception
    assert any("Estimated time on this machine" in md.value for md in at.markdown)
    assert any("No runs of your own yet" in i.value for i in at.info)


def test_train_page_with_a_shipped_model_only_still_works(shipped, dataset):
    at = page_test("training.py").run()
    assert not at.exception and any("No runs of your own yet" in i.value for i in at.info)


def test_train_page_shows_a_completed_run_with_its_diagnosis(completed, dataset):
    at = page_test("training.py").run()
    assert not at.exception
    text = "\n".join(md.value for md in at.markdown)
    assert "status: **completed**" in text
    summary = runs.read_json(completed / runs.SUMMARY_FILE)
    assert f"Test accuracy **{wording.percent(summary['test_accuracy'])}**" in text
    if runs.is_collapsed(runs.read_run(completed)):  # a tiny run may be: then that, not its curves, is said
        assert any(e.value.startswith("**Collapse: ") for e in at.error)
    else:
        assert any(i.value.startswith("**Diagnosis**") for i in at.info)


def test_train_page_shows_a_failed_runs_error_text(failed, dataset):
    at = page_test("training.py").run()
    assert not at.exception
    assert "The run failed: RuntimeError: out of memory" in at.error[0].value
    assert "Traceback" not in at.error[0].value


def test_changing_the_form_updates_the_estimate(home, dataset):
    at = page_test("training.py").run()

    def estimate():
        return next(md.value for md in at.markdown if "Estimated time" in md.value)

    before = estimate()
    at.checkbox(key="tr_bf16").check().run()  # the baseline trains faster in bfloat16
    assert estimate() != before and "training" in estimate()
    at.selectbox(key="tr_model").set_value("mobilenet_v2").run()
    assert estimate() != before and "feature extraction" in estimate()
    at.select_slider(key="tr_photos").set_value(2000).run()  # frozen head on cached features: no images
    assert "turn on fine-tuning" in at.error[0].value
    at.checkbox(key="tr_ft").check().run()
    assert not at.error and "product photos (converted once, then cached)" in estimate()


def test_deleting_a_run_needs_confirmation(completed, dataset):
    at = page_test("training.py").run()
    assert at.button(key="tr_delete").disabled
    at.checkbox(key="tr_delete_sure").check().run()
    at.button(key="tr_delete").click().run()
    assert not completed.exists()
    assert any("No runs of your own yet" in i.value for i in at.info)


# ---------------------------------------------------------------------------------------- Compare page


def test_compare_page_with_no_runs_says_so(home, dataset):
    at = page_test("comparison.py").run()
    assert not at.exception and any("No finished runs" in i.value for i in at.info)


def test_compare_page_defaults_to_the_shipped_model(shipped, dataset):
    at = page_test("comparison.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["model"]) == [runs.read_run(shipped, shipped=True).label]
    assert list(table.columns[:4]) == [
        "model",
        "test accuracy",
        "macro-F1",
        "run time s",
    ]  # what matters first


def test_compare_page_compares_a_run_with_the_shipped_model(completed, shipped, failed, dataset):
    at = page_test("comparison.py").run()
    assert not at.exception
    expected = [r.run_id for r in runs.default_comparison(runs.comparable_runs())]  # shipped + best own
    assert at.multiselect(key="cmp_runs").value == expected and expected[0] == "baseline"
    at.multiselect(key="cmp_runs").set_value([completed.name]).run()
    table = at.dataframe[0].value
    assert list(table["model"]) == [runs.read_run(completed).label]
    assert failed.name not in at.multiselect(key="cmp_runs").options
    summary = runs.read_json(completed / runs.SUMMARY_FILE)
    assert table.iloc[0]["test accuracy"] == pytest.approx(100 * summary["test_accuracy"])  # shown in percent


def test_pitfall_lab_results_come_from_the_lab_runs(completed, dataset):
    runs.write_json(pitfall.lab_file(), {"runs": {"fixed": completed.name}, "note": "test"})
    at = page_test("comparison.py").run()
    assert not at.exception
    summary = runs.read_json(completed / runs.SUMMARY_FILE)
    assert any(m.value == f"{summary['test_accuracy']:.1%}" for m in at.metric)
    saved = evaluate.load_predictions(completed)
    sentence = evaluate.collapse_report(saved.labels, saved.probabilities).sentence()
    assert any(e.value == sentence for e in [*at.error, *at.success])


def test_the_run_picker_labels_stay_the_same_while_a_run_moves_on(completed, dataset):
    """Streamlit matches the browser's choice by its label: a label carrying the run's state changed as the
    run went on, and the page jumped to another run. The picker's labels leave the state out."""
    from fashion_lib import lifecycle, processes

    watched = runs.create_run(tiny().to_dict(), "20260101-000000-baseline")
    move_run(watched, "queued")
    at = page_test("training.py").run()
    at.selectbox(key="tr_run_select").set_value(watched.name).run()
    before = at.selectbox(key="tr_run_select").options
    label_before = runs.read_run(watched).label
    lifecycle.transition(watched, lifecycle.RUNNING, by=processes.current())
    assert runs.read_run(watched).label != label_before  # what the run list shows does change
    at.run()
    assert not at.exception and at.selectbox(key="tr_run_select").options == before
    assert at.session_state["tr_run_pick"] == watched.name
    assert any(f"**{watched.name}** — status: **running**" in md.value for md in at.markdown)


def test_launch_uses_a_value_changed_in_the_same_interaction(home, dataset, monkeypatch):
    """A value typed just before pressing Launch reaches the run: the config is read when the button is
    pressed, not bound when the page was drawn (which launched 5 epochs after the user typed 7)."""
    from fashion_lib import jobs

    launched = []
    monkeypatch.setattr(jobs, "launch", lambda folder, queue=False: launched.append(folder))
    at = page_test("training.py").run()
    at.number_input(key="tr_epochs").set_value(7)
    at.select_slider(key="tr_photos").set_value(1000)
    at.button(key="tr_launch").click().run()  # both reach the page in one rerun, as from a browser
    assert not at.exception and len(launched) == 1
    assert runs.read_json(launched[0] / runs.CONFIG_FILE)["epochs"] == 7
    assert runs.read_json(launched[0] / runs.CONFIG_FILE)["photo_mix"] == 1000
    assert at.session_state["tr_run_pick"] == launched[0].name


def test_a_run_that_cannot_start_is_an_error_message_not_a_traceback(home, dataset, monkeypatch):
    """Whatever starting the run refuses with (here a config damaged between creating the run and starting
    it) reaches the user as the page's error message, and the run folder is removed again."""
    from fashion_lib import jobs

    def refuse(folder, queue=False, kind="train"):
        raise ValueError(f"{folder.name} has no readable config.json (Expecting value)")

    monkeypatch.setattr(jobs, "start", refuse)
    at = page_test("training.py").run()
    at.button(key="tr_launch").click().run()
    assert not at.exception
    assert any("has no readable config.json" in e.value for e in at.error)
    assert not list(config.runs_dir().glob("*"))
