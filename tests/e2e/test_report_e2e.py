"""The report in a real browser: the page's download buttons deliver the files, and the HTML opens in
Chromium with no network at all and its charts render."""

from __future__ import annotations

import zipfile

from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import open_page, screenshot, wait_for_script


def test_report_downloads_and_the_html_renders_offline(page: Page, browser: Browser, app_url: str, tmp_path):
    open_page(page, f"{app_url}/report", "Technical report")
    page.get_by_role("button", name="Build the report").click()
    expect(page.get_by_role("heading", name="Error analysis")).to_be_visible(timeout=120_000)
    wait_for_script(page)
    screenshot(page, "report-page")

    with page.expect_download() as html_download:
        page.get_by_role("button", name="Download HTML").click()
    html_file = tmp_path / "report.html"
    html_download.value.save_as(html_file)
    with page.expect_download() as zip_download:
        page.get_by_role("button", name="Download Markdown (zip)").click()
    zip_file = tmp_path / "report.zip"
    zip_download.value.save_as(zip_file)
    names = zipfile.ZipFile(zip_file).namelist()
    assert "report.md" in names and "report.html" in names and any(n.startswith("images/") for n in names)

    offline = browser.new_context(offline=True, viewport={"width": 1200, "height": 2400})
    try:
        report_page = offline.new_page()
        report_page.goto(html_file.as_uri())
        expect(report_page.get_by_role("heading", name="Error analysis")).to_be_visible()
        charts = report_page.locator(".js-plotly-plot")
        expect(charts.first.locator(".main-svg").first).to_be_visible()
        assert charts.count() >= 4  # class balance, curves, confusion matrix, reliability
        assert report_page.locator("img[src^='data:image/png']").count() >= 1  # Grad-CAM examples
        report_page.screenshot(path=str(tmp_path / "offline.png"))
    finally:
        offline.close()
