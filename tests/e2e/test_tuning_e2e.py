"""Tuning explorer in a real browser: the charts render, clicking a trial's row opens its curves, and
"train the final model" starts a training job."""

from __future__ import annotations

import shutil

from playwright.sync_api import Page, expect

from fashion_lib import config, jobs, lifecycle, runs, train
from fashion_lib.tuning import storage
from tests.e2e.conftest import open_page, screenshot, wait_for_script
from tests.unit.test_train import tiny
from tests.unit.test_tuning import stored_study

ROW_PX = 35  # Streamlit's data grid: header and rows are 35 px high


def test_explorer_charts_a_clicked_trial_and_training_the_winner(page: Page, app_url: str, dataset):
    study = stored_study(storage.open_store(), "browser-study")
    trial_run = train.train(tiny(epochs=3))
    for trial in study.trials:
        shutil.copytree(trial_run, config.runs_dir() / trial.user_attrs["run"])

    open_page(page, f"{app_url}/tuning", "Hyperparameter tuning")
    page.get_by_label("Study", exact=True).first.click()
    page.get_by_role("option", name="browser-study", exact=False).click()
    wait_for_script(page)
    expect(page.get_by_text("Trial 1 (complete)")).to_be_visible()  # the best trial, by default
    expect(page.locator(".st-key-tu_trial_curves .js-plotly-plot")).to_be_visible()
    for tab in (
        "Optimization history",
        "Parallel coordinates",
        "Hyperparameter importances",
        "Intermediate values",
    ):
        page.get_by_role("tab", name=tab).click()
        expect(page.get_by_role("tabpanel", name=tab).locator(".js-plotly-plot")).to_be_visible()
    screenshot(page, "tuning-explorer")

    grid = page.locator(".st-key-tu_trial_table [data-testid=stDataFrame]")
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 12, box["y"] + ROW_PX + 3 * ROW_PX + ROW_PX / 2)  # the row of trial 3
    expect(page.get_by_text("Trial 3 (complete)")).to_be_visible()
    wait_for_script(page)
    expect(page.locator(".st-key-tu_trial_curves .js-plotly-plot")).to_be_visible()

    before = {r.run_id for r in runs.list_runs(include_shipped=False)}
    page.get_by_role("button", name="Train the final model with these parameters").click()
    expect(page.get_by_text("follow it on the Train page")).to_be_visible()
    new = [r for r in runs.list_runs(include_shipped=False) if r.run_id not in before]
    assert len(new) == 1 and train.TrainConfig.from_run(new[0].folder).subset == 0
    assert new[0].state in ("queued", "running")
    jobs.stop(new[0].folder)  # the full-data run is not this test's business
    assert lifecycle.state_of(new[0].folder).state in ("queued", "running", "stopping", "stopped")


def test_a_search_started_from_the_page_is_followed_live_until_it_ends(page: Page, app_url: str, dataset):
    open_page(page, f"{app_url}/tuning", "Hyperparameter tuning")
    form = page.locator(".st-key-tune_form")
    if not form.is_visible():
        page.get_by_text("Start a search").click()
    page.get_by_label("Study name").fill("live-search")
    page.get_by_label("Study name").press("Enter")
    for label, value in (("Trials to add", "2"), ("Epochs per trial", "1")):
        page.get_by_label(label).fill(value)
        page.get_by_label(label).press("Enter")
    page.get_by_label("Training images per trial", exact=True).click()  # not its help button
    page.get_by_role("option", name="2,000").click()
    wait_for_script(page)
    page.get_by_role("button", name="Start the search").click()
    expect(page.get_by_text("Search started")).to_be_visible()
    running = page.get_by_text("-tune-live-search — running")
    expect(running).to_be_visible(timeout=60_000)  # the box follows the job: queued, then running
    # the explorer shows the new study once it is in the database, with no reload
    expect(page.get_by_label("Study", exact=True).first).to_have_value(
        "live-search — Baseline CNN", timeout=60_000
    )
    screenshot(page, "tuning-live-search")
    expect(running).to_be_hidden(timeout=240_000)  # ended: the box is gone without a reload
    trials = page.locator("[data-testid=stMetric]").filter(has_text="Trials").first
    expect(trials.locator("[data-testid=stMetricValue]")).to_have_text("2", timeout=30_000)
    screenshot(page, "tuning-live-search-done")
    study = storage.load_study(storage.open_store(), "live-search")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
