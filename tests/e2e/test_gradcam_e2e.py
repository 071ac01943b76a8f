"""Grad-CAM in a real browser: upload a product photo (a boot pointing right, unlike Fashion-MNIST's), see
the conversion, the verdict and the overlays of the best shipped model, which classifies its mirror image,
then of both shipped models side by side (the baseline takes the photo as it is)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from fashion_lib import config, runs
from tests.e2e.conftest import open_page, screenshot, wait_for_script
from tests.unit.test_photos import right_facing_boot


def test_upload_a_photo_and_see_both_shipped_models_side_by_side(page: Page, app_url: str, dataset, tmp_path):
    photo = tmp_path / "ankle-boot.jpg"
    photo.write_bytes(right_facing_boot(dataset))
    shipped = sorted(runs.shipped_models(), key=lambda r: r.test_accuracy, reverse=True)
    assert len(shipped) == 2  # the baseline and MobileNetV2
    best, other = shipped

    open_page(page, f"{app_url}/gradcam", "Where does the model look?")
    page.locator("[data-testid=stFileUploaderDropzoneInput]").set_input_files(str(photo))
    item = page.locator(".st-key-cam_item_0")
    expect(item.get_by_text("ankle-boot.jpg")).to_be_visible(timeout=60_000)
    expect(item.get_by_text(f"{best.label} —")).to_be_visible(timeout=90_000)  # the best model by default
    wait_for_script(page)
    expect(item.get_by_text("back on the photo")).to_be_visible()
    expect(item.get_by_text("28×28, centred")).to_be_visible()
    mirrored = item.get_by_text("Classified as its mirror image")
    expect(mirrored).to_have_count(1)
    expect(item.get_by_text("Ankle boot (9")).to_be_visible()
    assert item.locator("[data-testid=stImage] img").count() >= 8  # 5 conversion steps + 3 overlays
    screenshot(page, "gradcam-upload")

    page.get_by_text("Compare with a second model").click()
    wait_for_script(page)
    expect(item.get_by_text(f"{best.label} —")).to_be_visible(timeout=90_000)
    expect(item.get_by_text(f"{other.label} —")).to_be_visible(timeout=90_000)
    expect(item.get_by_text("back on the photo")).to_have_count(2)
    expect(mirrored).to_have_count(1)  # the baseline does not know mirror images: the photo as it is
    expect(item.get_by_text("Ankle boot").first).to_be_visible()
    screenshot(page, "gradcam-two-models")
    assert (config.CACHED_MODELS_DIR / "mobilenet_v2").is_dir()
