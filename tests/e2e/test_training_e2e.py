"""Train and Compare pages in a real browser: launch a tiny run from the form, watch the curves grow,
reload mid-run and still see it live, stop it; the comparison table shows two runs."""

from __future__ import annotations

import shutil

from playwright.sync_api import Page, expect

from fashion_lib import config, lifecycle, runs, train
from tests.e2e.conftest import open_page, screenshot, wait_for_script
from tests.unit.test_train import tiny

CURVE_POINTS = """() => {
    const plot = document.querySelector('.st-key-live .js-plotly-plot');
    return plot && plot.data && plot.data.length ? plot.data[0].x.length : 0;
}"""


def choose(page: Page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_for_script(page)


def curve_points(page: Page) -> int:
    return page.evaluate(CURVE_POINTS)


def test_launch_watch_reload_and_stop_a_run(page: Page, app_url: str, dataset, trained_run):
    # A run that sorts as the newest: the page must stay on the run it watches when that one ends.
    newest = config.runs_dir() / "29991231-000000-baseline"
    if not newest.exists():
        shutil.copytree(trained_run, newest)
    open_page(page, f"{app_url}/training", "Train a model")
    choose(page, "Training images", "5,000")
    choose(page, "Test images", "500")
    page.get_by_label("Epochs", exact=True).fill("100")
    page.get_by_label("Epochs", exact=True).press("Enter")
    wait_for_script(page)
    page.get_by_label("Early-stopping patience (0 = off)").fill("0")
    page.get_by_label("Early-stopping patience (0 = off)").press("Enter")
    wait_for_script(page)
    page.get_by_role("button", name="Launch training").click()

    expect(page.get_by_text("status: running")).to_be_visible(timeout=90_000)
    page.wait_for_function(f"() => ({CURVE_POINTS})() >= 2", timeout=90_000)
    first = curve_points(page)
    page.wait_for_function(f"() => ({CURVE_POINTS})() > {first}", timeout=60_000)  # it grows, live
    screenshot(page, "training-live")
    run_list = page.locator("[data-testid=stDataFrame] [role=grid]").last
    expect(run_list).to_contain_text("running", timeout=30_000)  # the whole page followed the start

    page.reload()  # the run goes on in its own process; the page finds it again
    expect(page.get_by_text("status: running")).to_be_visible(timeout=60_000)
    watched = page.locator(".st-key-live strong").first.inner_text()
    assert watched != newest.name
    reloaded = curve_points(page)
    page.wait_for_function(f"() => ({CURVE_POINTS})() > {reloaded}", timeout=60_000)

    page.locator(".st-key-live").get_by_role("button", name="Stop").click()
    expect(page.get_by_text("status: stopped")).to_be_visible(timeout=90_000)
    expect(page.get_by_text("Diagnosis")).to_be_visible()
    # the run ended: the whole page redraws (no "is running now" left) and stays on the run it watched
    running_note = page.locator("[data-testid=stAlert]", has_text=f"{watched} is running now")
    expect(running_note).to_have_count(0, timeout=30_000)
    wait_for_script(page)
    expect(page.locator(".st-key-live strong").first).to_have_text(watched)
    expect(page.get_by_text("status: stopped")).to_be_visible()
    screenshot(page, "training-stopped")
    folder = runs.resolve_run(watched)
    assert lifecycle.effective_state(folder) == "stopped" and (folder / "model.keras").is_file()


def test_comparison_table_shows_two_runs(page: Page, app_url: str, dataset):
    for seed in (1, 2):
        train.train(tiny(epochs=1, seed=seed))
    open_page(page, f"{app_url}/comparison", "Compare models")
    expect(page.locator(".st-key-cmp_table [data-testid=stDataFrame]")).to_be_visible()
    grid = page.locator(".st-key-cmp_table [role=grid]")  # the data grid's accessible (off-screen) table
    defaults = runs.default_comparison(runs.comparable_runs())  # the shipped models + the best own run
    expect(grid).to_have_attribute("aria-rowcount", str(len(defaults) + 1))  # header + those
    other = next(r for r in runs.comparable_runs() if r.run_id not in {d.run_id for d in defaults})
    page.get_by_label("Runs to compare").first.click()
    page.get_by_role("option", name=other.label).click()
    wait_for_script(page)
    page.keyboard.press("Escape")
    expect(grid).to_have_attribute("aria-rowcount", str(len(defaults) + 2))
    screenshot(page, "comparison")
