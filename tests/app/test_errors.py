"""Error-analysis page (AppTest): shipped model, a selected cell, a collapsed run, no runs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fashion_lib import config, evaluate, runs
from tests.app.conftest import page_test
from tests.conftest import move_run


@pytest.fixture
def only_shipped(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path))  # no user runs: the best shipped model is the default


def best_shipped() -> runs.RunInfo:
    return runs.default_choice(runs.shipped_models())


def test_error_page_on_the_shipped_model(only_shipped, dataset):
    at = page_test("errors.py").run()
    assert not at.exception
    assert at.selectbox(key="err_run").value == best_shipped().run_id == "mobilenet_v2"
    p = evaluate.load_predictions(best_shipped().folder)
    cm = evaluate.confusion_counts(p.labels, p.predicted)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Shirt → Pullover"] == str(cm[6, 2]) and metrics["Pullover → Shirt"] == str(cm[2, 6])
    share = (cm[6, 2] + cm[2, 6]) / (cm.sum() - np.trace(cm))
    assert metrics["Share of all errors"] == f"{100 * share:.1f} %"
    # where the design's pair stands: third for the shipped models, after Shirt/T-shirt and Coat/Shirt
    assert any(evaluate.pair_standing(cm, 6, 2) in md.value for md in at.markdown)
    assert "is number 3 of the 45 class pairs" in evaluate.pair_standing(cm, 6, 2)
    assert any("Click a cell" in i.value for i in at.info)
    summary = runs.read_json(best_shipped().folder / runs.SUMMARY_FILE)
    assert any(evaluate.temperature_sentence(summary) in c.value for c in at.caption)


def test_selected_cell_shows_exactly_its_images(only_shipped, dataset):
    at = page_test("errors.py")
    at.session_state["err_cell"] = (6, 2)
    at.run()
    p = evaluate.load_predictions(best_shipped().folder)
    n = int(np.sum((p.labels == 6) & (p.predicted == 2)))
    assert any(md.value == f"**{n} test images: true Shirt → predicted Pullover**" for md in at.markdown)


def test_a_collapsed_run_is_flagged(tmp_path, monkeypatch, dataset):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    folder = runs.create_run({"model": "efficientnet_b0"}, "20260101-000000-efficientnet_b0-collapsed")
    probs = np.full((10000, 10), 0.01)
    probs[:, 3] = 0.91  # everything is a Dress
    np.savez_compressed(
        folder / runs.PREDICTIONS_FILE,
        probabilities=probs.astype(np.float32),
        labels=dataset.y_test,
        test_index=np.arange(10000),
    )
    runs.write_json(folder / runs.SUMMARY_FILE, {"test_accuracy": 0.1})
    shutil.copy(config.CACHED_MODELS_DIR / "baseline" / runs.MODEL_FILE, folder / runs.MODEL_FILE)
    move_run(folder, "completed")
    at = page_test("errors.py").run()
    assert not at.exception
    assert at.selectbox(key="err_run").value == best_shipped().run_id  # the best model, not the collapsed one
    assert not at.error
    at.selectbox(key="err_run").set_value(folder.name).run()
    assert at.error[0].value.startswith("**Collapse: ") and "'Dress'" in at.error[0].value
    # a collapsed model's "possible label errors" would be noise: not judged (nor marked in the galleries)
    assert any(i.value.startswith("Not judged for this model") for i in at.info)
    # the run tables say so too (they said nothing while this page warned)
    rows = {r["run"]: r for r in runs.run_rows(runs.list_runs())}
    assert rows[folder.name]["problem"].startswith("collapsed: one class for almost everything")
    # its causes, not "the signature of the original prototype" for a run of one epoch
    assert evaluate.COLLAPSE_CAUSES in at.error[0].value and "signature" not in at.error[0].value
    # and the Train page says it too: it called a one-class model "Not enough epochs"
    train = page_test("training.py")
    train.session_state["tr_run_pick"] = folder.name
    train.run()
    assert not train.exception and any(e.value.startswith("**Collapse: ") for e in train.error)
    assert not any("Diagnosis" in i.value for i in train.info)
    assert rows["baseline"]["problem"] == ""


def test_no_runs_at_all(tmp_path, monkeypatch, dataset):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    monkeypatch.setattr(config, "CACHED_MODELS_DIR", tmp_path / "none")
    at = page_test("errors.py").run()
    assert not at.exception and any("No finished run" in i.value for i in at.info)
