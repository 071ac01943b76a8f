"""EDA and augmentation pages in a real browser: charts render, an embedding click shows the image,
a box selection shows a gallery with its class mix, and the augmentation preview re-samples."""

from __future__ import annotations

import numpy as np
from playwright.sync_api import Page, expect

from fashion_lib import data, stats
from tests.e2e.conftest import open_page, screenshot, wait_for_script

# Pixel position of data point (x, y) inside the plot div, from plotly's own axis objects.
POINT_TO_PIXELS = """(el, [x, y]) => {
    const plot = el.querySelector('.js-plotly-plot');
    const xa = plot._fullLayout.xaxis, ya = plot._fullLayout.yaxis;
    const box = plot.getBoundingClientRect();
    return [box.left + xa._offset + xa.l2p(x), box.top + ya._offset + ya.l2p(y)];
}"""


def open_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    wait_for_script(page)


def isolated_point(dataset) -> tuple[int, float, float]:
    """The displayed PCA point farthest from its nearest neighbour: a click there can only hit it."""
    from sklearn.neighbors import NearestNeighbors

    emb = stats.pca_embedding(dataset.x_train, dataset.y_train)  # the server cached the same on disk
    keep = data.stratified_subset(emb.labels, 10_000, seed=0)
    coords = emb.coords[keep]
    scaled = (coords - coords.min(0)) / (coords.max(0) - coords.min(0))
    dist, _ = NearestNeighbors(n_neighbors=2).fit(scaled).kneighbors(scaled)
    # farthest from neighbours, but not on the very edge of the plot
    inner = np.all((scaled > 0.1) & (scaled < 0.9), axis=1)
    best = int(np.argmax(np.where(inner, dist[:, 1], -1)))
    return int(emb.index[keep][best]), float(coords[best, 0]), float(coords[best, 1])


def test_eda_charts_render(page: Page, app_url: str):
    open_page(page, f"{app_url}/eda", "Explore the data")
    expect(page.get_by_text("Train: balanced")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    screenshot(page, "eda-classes")
    open_tab(page, "Pixel intensity")
    expect(page.get_by_text("Mean image per class")).to_be_visible()
    screenshot(page, "eda-pixels")
    open_tab(page, "Class similarity")
    expect(page.get_by_text("Shirt / Pullover mean-image correlation")).to_be_visible()
    screenshot(page, "eda-similarity")


def test_clicking_an_embedding_point_shows_that_image(page: Page, app_url: str, dataset):
    open_page(page, f"{app_url}/eda", "Explore the data")
    open_tab(page, "Embedding")
    chart = page.locator(".st-key-embedding_chart")
    expect(chart.locator(".js-plotly-plot")).to_be_visible()
    page.wait_for_timeout(500)
    index, x, y = isolated_point(dataset)
    px, py = chart.evaluate(POINT_TO_PIXELS, [x, y])
    page.mouse.click(px, py)
    expect(page.get_by_text(f"Training image #{index}")).to_be_visible()
    expect(page.locator(".st-key-embedding_selection img")).to_have_count(1)
    screenshot(page, "eda-embedding-click")


def test_box_selection_shows_a_gallery_with_its_class_mix(page: Page, app_url: str):
    open_page(page, f"{app_url}/eda", "Explore the data")
    open_tab(page, "Embedding")
    plot = page.locator(".st-key-embedding_chart .js-plotly-plot")
    expect(plot).to_be_visible()
    page.wait_for_timeout(500)
    plot.hover()
    plot.locator(".modebar-btn[data-attr='dragmode'][data-val='select']").click()
    drag = plot.locator(".nsewdrag").first.bounding_box()
    cx, cy = drag["x"] + drag["width"] / 2, drag["y"] + drag["height"] / 2
    page.mouse.move(cx - 60, cy - 60)
    page.mouse.down()
    page.mouse.move(cx, cy, steps=5)
    page.mouse.move(cx + 60, cy + 60, steps=5)
    page.mouse.up()
    expect(page.get_by_text("images selected")).to_be_visible()
    expect(page.get_by_text("class mix")).to_be_visible()
    expect(page.locator(".st-key-embedding_selection img").nth(1)).to_be_visible()  # two or more
    screenshot(page, "eda-embedding-box")


def test_augmentation_preview_resamples(page: Page, app_url: str):
    open_page(page, f"{app_url}/augmentation", "Augmentation preview")
    preview = page.locator(".st-key-aug_preview img")
    expect(preview.first).to_be_visible()
    before = [preview.nth(i).get_attribute("src") for i in range(preview.count())]
    page.get_by_role("button", name="Re-sample").click()
    page.wait_for_function(
        "(before) => { const now = [...document.querySelectorAll('.st-key-aug_preview img')].map(i => i.src);"
        " return now.length > 0 && now.join() !== before.join(); }",
        arg=before,
        timeout=30_000,
    )
    wait_for_script(page)
    screenshot(page, "augmentation")
