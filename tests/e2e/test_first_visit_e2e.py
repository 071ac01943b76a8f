"""What a new user meets, in a real browser: Launch shows the launched run at once, and the pages that pick
a model open on the best one — never on a collapsed run, however new it is."""

from __future__ import annotations

import shutil

import numpy as np
from playwright.sync_api import Page, expect

from fashion_lib import config, jobs, pitfall, runs
from tests.conftest import move_run
from tests.e2e.conftest import open_page, screenshot, wait_for_script


def choose(page: Page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_for_script(page)


def launch(page: Page, previous: str = "") -> str:
    """Press Launch; return the run the page then shows (another than ``previous``) — the one it started."""
    shown = page.locator(".st-key-live strong").first
    before = shown.inner_text() if shown.count() else previous  # runs of other tests may be shown
    page.get_by_role("button", name="Launch training").click()
    page.wait_for_function(
        r"""([previous, before]) => {
            const e = document.querySelector('.st-key-live strong');
            return e && /^20\d{6}-\d{6}-/.test(e.innerText) && e.innerText !== previous
                && e.innerText !== before;
        }""",
        arg=[previous, before],
        timeout=60_000,
    )
    name = shown.inner_text()
    expect(page.get_by_text(f"Started {name}")).to_be_visible()
    return name


def test_launch_shows_the_launched_run_at_once(page: Page, app_url: str, dataset):
    open_page(page, f"{app_url}/training", "Train a model")
    choose(page, "Training images", "1,000")
    choose(page, "Test images", "500")
    first = launch(page)
    expect(page.locator(".st-key-live strong").first).to_have_text(first, timeout=60_000)
    queue = page.get_by_label("Queue my run: start it when that one finishes")
    if queue.count():  # the first is still training: queue the second
        page.get_by_text("Queue my run: start it when that one finishes").click()
        wait_for_script(page)
    second = launch(page, first)
    if queue.count():
        expect(queue).not_to_be_checked()  # "Queue my run" does not stay ticked for the next launch
    assert second != first
    expect(page.locator(".st-key-live strong").first).to_have_text(second, timeout=60_000)
    expect(page.locator(".st-key-live")).to_contain_text("status:")
    screenshot(page, "training-launched")
    for name in (second, first):  # not this test's business to train them
        jobs.stop(config.runs_dir() / name)


def collapsed_run() -> runs.RunInfo:
    """A newer run that predicts 'Dress' for every test image (the prototype's failure), with a model."""
    folder = runs.create_run(
        {"model": "efficientnet_b0", "input_scaling": "divide_by_255"},
        "29990101-000000-efficientnet_b0-div255",
    )
    labels = np.load(config.CACHED_MODELS_DIR / "baseline" / runs.PREDICTIONS_FILE)["labels"]
    probs = np.full((len(labels), 10), 0.01, np.float32)
    probs[:, 3] = 0.91
    np.savez_compressed(
        folder / runs.PREDICTIONS_FILE, probabilities=probs, labels=labels, test_index=np.arange(len(labels))
    )
    runs.write_json(
        folder / runs.SUMMARY_FILE, {"test_accuracy": float(np.mean(labels == 3)), "model": "efficientnet_b0"}
    )
    shutil.copy(config.CACHED_MODELS_DIR / "baseline" / runs.MODEL_FILE, folder / runs.MODEL_FILE)
    move_run(folder, "completed")
    return runs.read_run(folder)


def test_error_analysis_and_gradcam_open_on_the_best_model_not_the_newest(page: Page, app_url: str, dataset):
    collapsed = collapsed_run()
    best = runs.default_choice(runs.comparable_runs())
    assert best.run_id != collapsed.run_id
    open_page(page, f"{app_url}/errors", "Error analysis")
    expect(page.get_by_label("Run", exact=True).first).to_have_value(best.label)
    expect(page.get_by_text("the signature of the original prototype")).to_have_count(0)  # no collapse
    screenshot(page, "errors-default-model")
    open_page(page, f"{app_url}/gradcam", "Where does the model look?")
    expect(page.get_by_label("Model", exact=True).first).to_have_value(best.label)
    # choosing the collapsed model on purpose: it is shown, with a warning
    choose(page, "Model", collapsed.label)
    expect(page.get_by_text("predicts one class for almost everything")).to_be_visible()


def test_compare_opens_with_what_matters_first_and_the_lab_says_what_it_can_show(page: Page, app_url: str):
    open_page(page, f"{app_url}/comparison", "Compare models")
    grid = page.locator(".st-key-cmp_table [data-testid=stDataFrame]")
    expect(grid).to_be_visible()
    headers = grid.locator("[role=columnheader]")  # the data grid's accessible (off-screen) table
    expect(headers.first).to_be_attached()
    shown = [h.strip() for h in headers.evaluate_all("cells => cells.map(c => c.textContent)")]
    # what matters first, and nothing else in the main table (details are in the expander)
    assert shown == [
        "model",
        "test accuracy",
        "macro-F1",
        "run time s",
        "latency ms/image (batched)",
        "size MB",
        "parameters",
    ], shown
    for shipped in runs.shipped_models():  # selected by default
        expect(page.locator(".st-key-cmp_table").get_by_text(shipped.label).first).to_be_attached()
    # this test server has no ImageNet weights: the lab says so before anything runs, and so does its button
    lab = pitfall.plan()
    assert not lab.shows_the_failure
    expect(page.get_by_text("There are no ImageNet weights on this machine")).to_be_visible()
    expect(page.get_by_role("button", name=lab.button_label)).to_be_visible()
    screenshot(page, "comparison-first-visit")
