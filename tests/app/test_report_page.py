"""Report page (AppTest): the shipped models by default, the same sections as the library builds, a study."""

from __future__ import annotations

import pytest

from fashion_lib import report, runs
from fashion_lib.tuning import storage
from tests.app.conftest import page_test
from tests.unit.test_tuning import stored_study


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FASHION_TUNING_DB", raising=False)


def test_the_report_page_builds_the_report_of_the_shipped_models(home, dataset):
    at = page_test("report.py").run()
    assert not at.exception
    assert sorted(at.multiselect(key="rep_runs").value) == ["baseline", "mobilenet_v2"]  # both shipped
    assert any("build the report" in i.value for i in at.info)
    at.button(key="rep_build").click().run()
    assert not at.exception
    headers = [h.value for h in at.header]
    # the library's sections in its order (an empty report has them all; building the shipped one twice
    # would double the test's time)
    assert headers == [s.title for s in report.build([], None, dataset).sections] and len(headers) == 9
    for shipped in runs.shipped_models():
        assert any(shipped.label in md.value for md in at.markdown)
    assert any("No tuning study" in w.value for w in at.warning)  # the section says what is missing
    assert {b.label for b in at.get("download_button")} == {"Download HTML", "Download Markdown (zip)"}


def test_a_chosen_study_fills_the_tuning_section(home, dataset):
    stored_study(storage.open_store(), "for-the-report")
    at = page_test("report.py").run()
    at.multiselect(key="rep_runs").set_value(["baseline"])  # one model is enough for the study's section
    at.selectbox(key="rep_study").set_value("for-the-report").run()
    at.button(key="rep_build").click().run()
    assert not at.exception
    assert any("Study **for-the-report**: 4 trials" in md.value for md in at.markdown)
    assert not any("No tuning study" in w.value for w in at.warning)
