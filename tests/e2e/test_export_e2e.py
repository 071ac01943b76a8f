"""Compare page in a real browser: "Export a model" downloads a zip holding the .keras file, the SavedModel
in TF Serving's version layout and the model card."""

from __future__ import annotations

import zipfile

from playwright.sync_api import Page, expect

from tests.e2e.conftest import open_page, screenshot


def test_the_export_button_downloads_a_zip_of_the_model_and_its_card(page: Page, app_url: str, tmp_path):
    open_page(page, f"{app_url}/comparison", "Compare models")
    page.get_by_text("Export a model").click()
    button = page.get_by_role("button", name="Download the export (zip)")
    expect(button).to_be_visible()
    screenshot(page, "comparison-export")
    with page.expect_download(timeout=120_000) as download_info:
        button.click()
    download = download_info.value
    assert download.suggested_filename.endswith("-export.zip")
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
    folder = names[0].split("/")[0]
    assert {f"{folder}/model.keras", f"{folder}/card.json", f"{folder}/README.md"} <= set(names)
    assert f"{folder}/savedmodel/1/saved_model.pb" in names
