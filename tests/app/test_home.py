"""Home page (AppTest): what the app does, the verified data, models and runs, settings."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from fashion_lib.config import REPO_ROOT

MAIN = str(REPO_ROOT / "app" / "main.py")


@pytest.fixture(autouse=True)
def fresh_cache():
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def test_app_entry_point_opens_on_home_with_the_verified_data(dataset):
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Fashion-MNIST analysis dashboard"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Training images"] == "60,000"
    assert metrics["Test images"] == "10,000"
    assert metrics["Classes"] == "10"
    assert any("Verified" in s.value for s in at.success)
    assert any(str(dataset.source.folder) in md.value for md in at.markdown)


def test_home_lists_the_settings_with_their_values(monkeypatch, tmp_path):
    monkeypatch.setenv("FASHION_WEIGHTS_DIR", str(tmp_path / "w"))
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    settings = at.table[0].value
    assert set(settings.index) >= {"FASHION_MNIST_DIR", "FASHION_HOME", "FASHION_WEIGHTS_DIR"}
    assert settings.loc["FASHION_WEIGHTS_DIR", "value now"] == str(tmp_path / "w")


def test_home_without_data_explains_how_to_provide_it_instead_of_crashing(monkeypatch, tmp_path):
    from fashion_lib import config

    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(config, "checkout_data_dir", lambda: tmp_path / "none1")
    monkeypatch.setattr(config, "DEBIAN_DATA_DIR", tmp_path / "none2")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("FASHION_MNIST_MIRRORS", "none")
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    assert not at.exception
    assert "not available" in at.error[0].value
    shown = at.code[0].value
    assert "apt-get install dataset-fashion-mnist" in shown and "FASHION_MNIST_DIR" in shown
    assert not at.metric  # nothing pretends the data is there
    assert "Models and runs" in [h.value for h in at.subheader]  # the rest of Home still works


def test_home_lists_runs_found_in_the_runs_folder(tmp_path, monkeypatch):
    import json

    from fashion_lib import config

    monkeypatch.setenv("FASHION_HOME", str(tmp_path))  # its own: other tests leave runs of this name behind
    run = config.runs_dir() / "20260101-000000-baseline"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "baseline"}))
    (run / "status.json").write_text(json.dumps({"state": "failed", "error": "boom"}))
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    table = next(df.value for df in at.dataframe if "run" in df.value.columns)
    assert "20260101-000000-baseline" in set(table["run"])
    assert table.set_index("run").loc["20260101-000000-baseline", "status"] == "failed"
