"""A damaged run folder never breaks a page: every page that lists runs renders, says which run is damaged
and why, and keeps working for the other runs (issue #12: each of these crashed a page before)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from fashion_lib import config, runs
from tests import npz_damage
from tests.app.conftest import page_test


def _edit_json(path, **changes):
    value = json.loads(path.read_text())
    value.update(changes)
    path.write_text(json.dumps(value))


DAMAGES = {
    "a non-UTF-8 line in metrics.jsonl": (
        lambda f: (f / runs.METRICS_FILE).write_bytes(
            (f / runs.METRICS_FILE).read_bytes() + b"\xff\xfe\xfd\n"
        ),
        "not UTF-8",
    ),
    "an epoch that is not a number": (
        lambda f: (f / runs.METRICS_FILE).open("a").write('{"epoch": "two"}\n'),
        "epoch",
    ),
    "an accuracy of 7": (
        lambda f: (f / runs.METRICS_FILE).open("a").write('{"epoch": 9, "val_accuracy": 7}\n'),
        "val_accuracy",
    ),
    "model.keras deleted": (lambda f: (f / runs.MODEL_FILE).unlink(), "model.keras is missing"),
    "metrics.jsonl emptied": (lambda f: (f / runs.METRICS_FILE).write_text(""), "holds no finished epoch"),
    "test accuracy 'n/a'": (
        lambda f: _edit_json(f / runs.SUMMARY_FILE, test_accuracy="n/a"),
        "test_accuracy",
    ),
    "parameters 5": (lambda f: _edit_json(f / runs.SUMMARY_FILE, parameters=5), "parameters"),
    "status.json garbled": (lambda f: (f / runs.STATUS_FILE).write_bytes(b"{\x00garbage"), "status.json"),
    "config.json not an object": (lambda f: (f / runs.CONFIG_FILE).write_text("[1, 2]"), "config.json"),
    # was "'<' not supported between instances of 'str' and 'int'"
    "epochs 'many'": (
        lambda f: _edit_json(f / runs.CONFIG_FILE, epochs="many"),
        "config.json: invalid training config: 'epochs' must be a whole number, got 'many'",
    ),
    "summary.json half written": (lambda f: (f / runs.SUMMARY_FILE).write_text('{"test_acc'), "summary.json"),
    # RecursionError from the JSON parser went through the run list: every page failed
    "summary.json nested too deep": (
        lambda f: (f / runs.SUMMARY_FILE).write_text("[" * 3000 + "]" * 3000),
        "summary.json is missing or is not",
    ),
    "predictions.npz cut off": (lambda f: _cut(f / runs.PREDICTIONS_FILE), "predictions.npz cannot be read"),
    # raised RuntimeError from the run list: every page failed
    "predictions.npz encrypted": (
        lambda f: npz_damage.damage(f / runs.PREDICTIONS_FILE, "encrypted"),
        "probabilities.npy is encrypted",
    ),
    "predictions of another shape": (
        lambda f: np.savez(f / runs.PREDICTIONS_FILE, probabilities=np.ones((5, 3)), labels=np.arange(7)),
        "does not fit together",
    ),
    "model.keras cut off": (lambda f: _cut(f / runs.MODEL_FILE), "not a complete Keras file"),
    # a pipe in a file's place: reading it waited for a writer for ever, and every page with it
    "summary.json a pipe": (lambda f: _pipe(f / runs.SUMMARY_FILE), "summary.json is missing or is not"),
    "metrics.jsonl a pipe": (lambda f: _pipe(f / runs.METRICS_FILE), "metrics.jsonl cannot be read"),
    "model.keras a pipe": (lambda f: _pipe(f / runs.MODEL_FILE), "model.keras is not a regular file"),
}


def _pipe(path):
    path.unlink()
    os.mkfifo(path)


def _cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


PAGES = ["home.py", "training.py", "comparison.py", "errors.py", "gradcam.py", "report.py"]


@pytest.fixture(params=list(DAMAGES))
def damaged(request, trained_run, tmp_path, monkeypatch):
    """A fresh FASHION_HOME with one good run and, newer and 'better', one damaged run."""
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))
    good = shutil.copytree(trained_run, config.runs_dir() / "20260101-000000-baseline")
    bad = shutil.copytree(trained_run, config.runs_dir() / "20270101-000000-baseline")
    _edit_json(bad / runs.SUMMARY_FILE, test_accuracy=0.99)  # would be everyone's default if it were sound
    damage, problem = DAMAGES[request.param]
    damage(bad)
    return good, bad, problem


def test_the_damage_is_reported_with_what_is_wrong(damaged):
    _, bad, problem = damaged
    info = runs.read_run(bad)
    assert info.damaged and any(problem in p for p in info.problems)
    assert bad not in [r.folder for r in runs.comparable_runs()]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_keeps_working_next_to_a_damaged_run(page, damaged, dataset):
    good, bad, problem = damaged
    at = page_test(page).run()
    assert not at.exception, at.exception
    text = "\n".join(e.value for e in [*at.markdown, *at.caption, *at.error, *at.info, *at.warning])
    assert "Traceback" not in text
    if page in ("home.py", "training.py"):
        table = at.dataframe[-1].value
        row = table[table["run"] == bad.name].iloc[0]
        assert row["status"] == "damaged" and problem in row["problem"]
    if page == "comparison.py":
        assert f"{bad.name}: " in text and problem in text
        offered = at.multiselect(key="cmp_runs").options
        # both copies read "Baseline CNN · 22.00 % · 01 Jan 00:00:00": only the good one is offered
        assert offered.count(runs.display_name(runs.read_run(good))) == 1
        assert len(at.dataframe[0].value) >= 1  # the comparison table is drawn
    if page == "report.py":  # the damaged run is not offered, so building never trips over it
        offered = at.multiselect(key="rep_runs").options
        bad_label, good_label = (runs.display_name(runs.read_run(f)) for f in (bad, good))
        assert good_label in offered and (bad_label == good_label or bad_label not in offered)
    if page in ("errors.py", "gradcam.py"):
        picker = at.selectbox(key="err_run" if page == "errors.py" else "cam_run")
        assert picker.options.count(runs.display_name(runs.read_run(good))) == 1  # not the damaged twin
        assert picker.value == runs.default_choice(runs.comparable_runs()).run_id  # the best sound model


def test_the_damaged_run_itself_opens_on_the_train_page_with_its_problems(damaged, dataset):
    _, bad, problem = damaged
    at = page_test("training.py")
    at.session_state["tr_run_pick"] = bad.name
    at.run()
    assert not at.exception
    assert any(problem in e.value for e in at.error)
