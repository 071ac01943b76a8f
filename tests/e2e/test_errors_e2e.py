"""Error analysis in a real browser: clicking the Shirt → Pullover cell of the confusion matrix shows
exactly the test images whose true label is Shirt and whose prediction is Pullover."""

from __future__ import annotations

import numpy as np
from playwright.sync_api import Page, expect

from fashion_lib import config, evaluate, runs
from tests.e2e.conftest import open_page, screenshot, wait_for_script

SHIRT, PULLOVER = 6, 2


def click_cell(page: Page, true_class: int, predicted_class: int) -> None:
    """Click the centre of a cell: the plot area is split into 10 × 10 equal cells (fixed axis ranges)."""
    area = page.locator(".st-key-confusion .nsewdrag").first.bounding_box()
    x = area["x"] + (predicted_class + 0.5) * area["width"] / 10
    y = area["y"] + (true_class + 0.5) * area["height"] / 10
    page.mouse.move(x, y)
    page.wait_for_timeout(200)
    page.mouse.click(x, y)


def test_clicking_shirt_pullover_cell_shows_those_images(page: Page, app_url: str, dataset):
    shipped = runs.read_run(config.CACHED_MODELS_DIR / "baseline", shipped=True)
    p = evaluate.load_predictions(shipped.folder)
    expected = int(np.sum((p.labels == SHIRT) & (p.predicted == PULLOVER)))
    assert evaluate.confusion_counts(p.labels, p.predicted)[SHIRT, PULLOVER] == expected

    open_page(page, f"{app_url}/errors", "Error analysis")
    page.get_by_label("Run", exact=True).first.click()
    page.get_by_role("option", name=shipped.label).click()
    wait_for_script(page)
    # the chosen model's matrix, and only it (the default model's leaves as the page redraws)
    expect(page.locator(f".st-key-cm_{shipped.run_id}_False .js-plotly-plot")).to_be_visible()
    expect(page.locator(".st-key-confusion .js-plotly-plot")).to_have_count(1)
    page.wait_for_timeout(500)

    click_cell(page, SHIRT, PULLOVER)
    expect(page.get_by_text(f"{expected} test images: true Shirt → predicted Pullover")).to_be_visible()
    wait_for_script(page)
    gallery = page.locator(".st-key-cell_images [data-testid=stImage]")
    expect(gallery).to_have_count(min(expected, 60))
    # every caption names a test image whose saved true label is Shirt and prediction Pullover
    captions = page.locator(".st-key-cell_images [data-testid=stImageCaption]").all_inner_texts()
    shown = [int(c.split("·")[0].strip().lstrip("#")) for c in captions]
    where = {int(i): k for k, i in enumerate(p.test_index)}
    assert all(p.labels[where[i]] == SHIRT and p.predicted[where[i]] == PULLOVER for i in shown)
    screenshot(page, "errors-shirt-pullover")
