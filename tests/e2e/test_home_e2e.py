"""Home page in a real browser: content, settings expander, navigation, screenshot."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from app.navigation import available_pages
from tests.e2e.conftest import open_page, screenshot, wait_for_script


def test_home_shows_the_verified_data_and_the_models_section(page: Page, app_url: str, dataset):
    open_page(page, app_url, "Fashion-MNIST analysis dashboard")
    expect(page.get_by_text("60,000", exact=True)).to_be_visible()
    expect(page.get_by_text("10,000", exact=True)).to_be_visible()
    expect(page.get_by_text("Verified: IDX headers")).to_be_visible()
    expect(page.get_by_text(str(dataset.source.folder)).first).to_be_visible()
    expect(page.get_by_text("Models and runs")).to_be_visible()
    page.get_by_text("Settings (environment variables)").click()
    expect(page.get_by_text("FASHION_WEIGHTS_DIR").first).to_be_visible()
    screenshot(page, "home")


def test_every_page_opens_by_its_address_and_from_the_sidebar(page: Page, app_url: str):
    entries = available_pages()
    for entry in entries:
        path = "" if entry is entries[0] else entry.path.stem
        page.goto(f"{app_url}/{path}")
        wait_for_script(page)
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
    if len(entries) > 1:
        for entry in entries:
            page.locator('[data-testid="stSidebarNav"] a', has_text=entry.title).click()
            wait_for_script(page)
            expect(page).to_have_url(f"{app_url}/{'' if entry is entries[0] else entry.path.stem}")


def test_form_settings_survive_a_visit_to_another_page(page: Page, app_url: str, dataset):
    """A new user set 1,000 images and 1 epoch, looked at Home, came back: the form was at its defaults.
    (AppTest cannot show this: in a browser a page's widget values are dropped before the next page runs.)"""
    open_page(page, f"{app_url}/training", "Train a model")
    # each change has reached the server when the time estimate it changes is drawn again
    estimate = page.locator("p", has_text="Estimated time on this machine").first
    before = estimate.inner_text()
    epochs = page.get_by_label("Epochs", exact=True)
    epochs.fill("1")
    epochs.press("Enter")
    expect(estimate).not_to_have_text(before)
    before = estimate.inner_text()
    page.get_by_label("Training images", exact=True).first.click()
    page.get_by_role("option", name="1,000", exact=True).click()
    expect(estimate).not_to_have_text(before)
    wait_for_script(page)
    for title, heading in (("Home", "Fashion-MNIST analysis dashboard"), ("Train", "Train a model")):
        page.locator("[data-testid=stSidebarNav] a", has_text=title).first.click()
        expect(page.get_by_role("heading", name=heading, level=1)).to_be_visible()
        wait_for_script(page)
    expect(page.get_by_label("Epochs", exact=True)).to_have_value("1")
    expect(page.get_by_label("Training images", exact=True).first).to_have_value("1,000")
