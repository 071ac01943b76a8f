"""Grad-CAM in a real browser: upload a photo file, see the prediction and the overlay images."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from fashion_lib import config, runs
from tests.e2e.conftest import open_page, screenshot, wait_for_script
from tests.unit.test_photos import encode, silhouette


def test_upload_a_photo_and_see_prediction_and_overlays(page: Page, app_url: str, tmp_path):
    photo = tmp_path / "dark-shirt.jpg"
    photo.write_bytes(encode(silhouette(h=400, w=600, box=(320, 60, 440, 330)), "JPEG"))
    open_page(page, f"{app_url}/gradcam", "Where does the model look?")
    page.locator("[data-testid=stFileUploaderDropzoneInput]").set_input_files(str(photo))
    item = page.locator(".st-key-cam_item_0")
    expect(item.get_by_text("dark-shirt.jpg")).to_be_visible(timeout=60_000)
    shipped = runs.read_run(config.CACHED_MODELS_DIR / "baseline", shipped=True)
    expect(item.get_by_text(f"{shipped.label} —")).to_be_visible(timeout=60_000)  # the best model
    wait_for_script(page)
    expect(item.get_by_text("back on the photo")).to_be_visible()
    expect(item.get_by_text("28×28, centred")).to_be_visible()
    assert item.locator("[data-testid=stImage] img").count() >= 7  # 5 conversion steps + 2 overlays
    screenshot(page, "gradcam-upload")
