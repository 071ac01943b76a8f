"""Compare page, "Export a model" (AppTest): the shipped baseline is offered with both formats; no format,
no download. The download itself is checked in a real browser (tests/e2e/test_export_e2e.py)."""

from __future__ import annotations

import pytest

from fashion_lib import export
from tests.app.conftest import page_test


@pytest.fixture(autouse=True)
def no_runs(tmp_path, monkeypatch):
    """No runs of the user's: the page compares (and offers) the shipped baseline."""
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))


def export_button(at):
    (button,) = [b for b in at.get("download_button") if b.label == "Download the export (zip)"]
    return button


def test_the_export_expander_offers_the_shipped_model_in_both_formats(dataset):
    at = page_test("comparison.py").run()
    assert not at.exception
    assert any(e.label == "Export a model" for e in at.expander)
    assert at.selectbox(key="export_run").value.run_id == "baseline"
    assert at.multiselect(key="export_formats").value == list(export.EXPORT_FORMATS)
    assert not export_button(at).proto.disabled


def test_without_a_format_there_is_nothing_to_download(dataset):
    at = page_test("comparison.py").run()
    at.multiselect(key="export_formats").set_value([]).run()
    assert export_button(at).proto.disabled
