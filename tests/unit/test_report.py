"""The technical report: built from two tiny runs' saved artifacts, it holds their real numbers, says what
was not run, and writes self-contained HTML and Markdown with pictures."""

from __future__ import annotations

import argparse
import io
import re
import zipfile

import numpy as np
import pandas as pd
import pytest

from fashion_lib import __main__ as cli_module
from fashion_lib import evaluate, report, runs, train, wording
from fashion_lib.training import TrainConfig
from tests.unit.test_train import tiny

PLACEHOLDERS = re.compile(r"TODO|TBD|lorem|placeholder|XX\.X|\{[a-z_]+\}|nan %|None %", re.IGNORECASE)


@pytest.fixture(scope="module")
def two_runs(dataset):
    return [runs.read_run(train.train(tiny(epochs=2, seed=s))) for s in (1, 2)]


@pytest.fixture(scope="module")
def built(two_runs, dataset):
    return report.build(two_runs, None, dataset)


def texts(rep: report.Report) -> str:
    out = []
    for section in rep.sections:
        out.append(section.title)
        for block in section.blocks:
            if isinstance(block, report.Text | report.Missing):
                out.append(getattr(block, "markdown", None) or block.text)
            elif isinstance(block, report.Table):
                out.append(block.frame.to_string())
            elif isinstance(block, report.Picture | report.Chart):
                out.append(block.caption)
    return "\n".join(out)


def test_the_report_holds_the_runs_real_numbers(two_runs, built):
    body = texts(built)
    for info in two_runs:
        summary = runs.read_json(info.folder / runs.SUMMARY_FILE)
        p = evaluate.load_predictions(info.folder)
        cm = evaluate.confusion_counts(p.labels, p.predicted)
        pair = evaluate.pair_errors(cm, report.SHIRT, report.PULLOVER)
        assert wording.percent(summary["test_accuracy"]) in body
        assert f"{summary['macro_f1']:.4f}" in body
        assert f"{pair.all_errors:,} errors on {len(p.labels):,} test images" in body
        assert wording.percent(pair.share, 1) in body
        assert info.label in body
    assert not PLACEHOLDERS.search(body), PLACEHOLDERS.search(body)
    assert built.runs == [r.run_id for r in two_runs]


def test_the_shirt_pullover_correlation_is_ranked_among_all_pairs_as_measured(built, dataset):
    """It said 'the most similar pair'; Coat/Shirt and Pullover/Coat are more alike (the EDA page's table)."""
    from fashion_lib import stats

    corr = stats.mean_image_correlation(stats.class_mean_images(dataset.x_train, dataset.y_train))
    top = stats.most_correlated_pairs(corr, top=45)
    pairs = [{a, b} for a, b in zip(top["class A"], top["class B"], strict=True)]
    rank = 1 + pairs.index({"Shirt", "Pullover"})
    body = texts(built)
    assert f"Shirt and Pullover: **{corr[6, 2]:.3f}**, number {rank} of the 45 class pairs" in body
    first = top.iloc[0]
    assert rank == 1 or f"{first['class A']} ↔ {first['class B']} {first['correlation']:.3f}" in body
    assert "most similar" not in body


def test_sections_with_nothing_to_show_say_what_is_missing(built):
    by_title = {s.title: s for s in built.sections}
    tuning = by_title["Hyperparameter tuning"].blocks
    assert len(tuning) == 1 and isinstance(tuning[0], report.Missing) and "No tuning study" in tuning[0].text
    limits = texts(report.Report("t", "now", [], None, [by_title["Limitations — what was not run"]]))
    assert "EfficientNetB0: no run of it is in this report" in limits
    assert "evaluated on 50 test images, not all 10,000" in limits


def test_an_empty_report_still_builds_and_says_so(dataset):
    empty = report.build([], None, dataset)
    missing = [b.text for s in empty.sections for b in s.blocks if isinstance(b, report.Missing)]
    assert any("No model was chosen" in m for m in missing) and any("No run was chosen" in m for m in missing)


def test_html_is_one_self_contained_file(built):
    page = report.to_html(built)
    assert page.startswith("<!DOCTYPE html>") and "Plotly" in page
    assert not re.search(r"<script[^>]+src=", page)  # nothing to fetch: plotly.js is inline
    assert "data:image/png;base64," in page  # the Grad-CAM pictures are embedded
    assert page.count("class='chart'") == sum(
        isinstance(b, report.Chart) for s in built.sections for b in s.blocks
    )
    # "Not run" notes show their commands as code, not raw backticks; long commands wrap
    assert "<code>python -m fashion_lib tune --study NAME</code>" in page and "`python" not in page
    assert "pre{white-space:pre-wrap" in page


def test_markdown_zip_has_the_text_the_pictures_and_the_html(built):
    archive = zipfile.ZipFile(io.BytesIO(report.markdown_zip(built)))
    names = set(archive.namelist())
    assert {"report.md", "report.html"} <= names
    text = archive.read("report.md").decode()
    for image in re.findall(r"\]\((images/[^)]+\.png)\)", text):
        assert image in names and archive.read(image)[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(name.startswith("images/gradcam_") for name in names)
    assert "| true | predicted | errors | share of all errors |" in text


def test_markdown_tables_escape_pipes_and_show_missing_values():
    table = report.markdown_table(pd.DataFrame({"a": ["x|y", None], "b": [1.5, np.nan]}))
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1.5 |", "| — | — |"]


def test_a_run_without_test_predictions_is_refused_with_the_reason(dataset):
    trial_like = train.train(tiny(evaluate_test=False))
    with pytest.raises(ValueError, match="no test-set predictions"):
        report.resolve_runs([trial_like.name])


def test_the_reproduce_command_trains_the_same_config():
    cfg = tiny(model="mobilenet_v2", fine_tune=True, label_smoothing=0.1, temperature_scaling=False)
    command = cfg.command()
    parser = cli_module.build_parser()
    args = parser.parse_args(command.removeprefix("python -m fashion_lib ").replace("'", "").split())
    assert isinstance(args, argparse.Namespace) and cli_module.config_from_args(args) == cfg
    assert TrainConfig().command() == "python -m fashion_lib train --model baseline"


def test_the_report_command_refuses_what_it_cannot_write_and_names_a_run_once(
    two_runs, tmp_path, monkeypatch, capsys
):
    """--out "" wrote into the current folder (the checkout), an unknown study gave a "not run" box and exit
    status 0, a run named twice was reported twice."""
    monkeypatch.setenv("FASHION_TUNING_DB", f"sqlite:///{tmp_path / 'studies.db'}")
    name = two_runs[0].run_id
    assert cli_module.main(["report", "--runs", name, "--out", ""]) == 2
    assert "--out needs a folder" in capsys.readouterr().err
    assert cli_module.main(["report", "--runs", name, "--study", "nope", "--out", str(tmp_path / "r")]) == 2
    assert "No study named 'nope'" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert cli_module.main(["report", "--runs", f"{name},{name}", "--out", str(tmp_path / "r")]) == 0
    assert f"report on {name} built" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report-markdown.zip", "report.html"]


def test_a_collapsed_model_is_named_not_told_to_train_longer(two_runs, dataset, tmp_path, monkeypatch):
    """The report advised "train longer" for a model that predicts one class, and flagged 8,975 labels."""
    import shutil

    from fashion_lib import config

    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    folder = shutil.copytree(two_runs[0].folder, config.runs_dir() / two_runs[0].folder.name)
    saved = dict(np.load(folder / runs.PREDICTIONS_FILE))
    saved["probabilities"] = np.tile(np.eye(10, dtype=np.float32)[7], (len(saved["labels"]), 1))
    np.savez(folder / runs.PREDICTIONS_FILE, **saved)
    body = texts(report.build([runs.read_run(folder)], None, dataset))
    assert "no diagnosis: the model has collapsed" in body and "train longer" not in body
    assert "Label errors are not judged for it" in body and "Confident learning" not in body


def test_a_shipped_models_reproduce_command_is_its_cards(dataset):
    """The report recomputed it from the settings: the same run, other words than the model card's."""
    shipped = [info for info in runs.shipped_models() if info.run_id == "baseline"]
    card = runs.read_json(shipped[0].folder / runs.CARD_FILE)
    assert card["command"] in texts(report.build(shipped, None, dataset))


def test_a_study_whose_best_trial_has_no_parameters_says_so(tmp_path, monkeypatch):
    """Its empty parameter table was a traceback on the Report page (st.table of a frame with no column)."""
    import optuna

    from fashion_lib.tuning import storage

    monkeypatch.setenv("FASHION_TUNING_DB", f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="ext", storage=storage.open_store().storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.8))
    section = report._tuning_section("ext")
    missing = [b.text for b in section.blocks if isinstance(b, report.Missing)]
    assert any("has no parameters" in text for text in missing)
    assert all(len(b.frame.columns) for b in section.blocks if isinstance(b, report.Table))


def test_a_report_that_fails_halfway_leaves_the_earlier_one_as_it_was(built, tmp_path, monkeypatch):
    """It wrote report.html, then the zip, straight into place: a failure between them left the new HTML
    beside the earlier zip."""
    paths = report.write(built, tmp_path)
    before = {name: path.read_bytes() for name, path in paths.items()}

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(report, "markdown_zip", broken)
    with pytest.raises(OSError, match="No space left"):
        report.write(built, tmp_path)
    assert {name: path.read_bytes() for name, path in paths.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report-markdown.zip", "report.html"]


def test_a_cell_starting_with_a_greater_than_sign_is_not_a_quotation_on_the_page():
    """The Report page's tables render cells as Markdown: the design's "> 0.85" showed as a quotation."""
    frame = pd.DataFrame({"claim": ["correlation"], "the design said": ["> 0.85"], "n": [3]})
    shown = report.table_for_markdown_cells(frame)
    assert shown.loc[0, "the design said"] == "\\> 0.85" and shown.loc[0, "n"] == 3


def test_the_downloaded_html_draws_in_its_own_colours_inside_the_apps_process(two_runs, dataset, monkeypatch):
    """Built on the Report page, plotly's default template is Streamlit's, whose placeholder colours
    ("#000001") only a Streamlit page fills in: the downloaded report drew the class-balance bars black."""
    import plotly.io as pio
    import streamlit  # noqa: F401  (registers its template, as in the app's process)

    monkeypatch.setattr(pio.templates, "default", "streamlit")
    html = report.to_html(report.build(two_runs[:1], None, dataset))
    placeholder = re.search(r'"#0000(0[1-9a-f]|[1-9a-f][0-9a-f])"', html)  # Streamlit's, not black
    assert placeholder is None, placeholder
