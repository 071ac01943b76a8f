"""Grad-CAM page (AppTest): uploads through file_uploader, a bad file next to a good one, test images."""

from __future__ import annotations

import pytest

from fashion_lib import evaluate, runs
from tests.app.conftest import page_test
from tests.unit.test_photos import encode, right_facing_boot, silhouette


@pytest.fixture
def gradcam_page(tmp_path, monkeypatch, dataset):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path))  # the best shipped model is the one to explain
    return page_test("gradcam.py").run()


def test_uploading_photos_shows_the_strip_prediction_and_overlays_and_a_bad_file_does_not_spoil_them(
    gradcam_page,
):
    at = gradcam_page
    assert not at.exception and any("Upload one or several photos" in i.value for i in at.info)
    at.file_uploader(key="cam_files").set_value(
        [
            ("shirt.png", encode(silhouette(), "PNG"), "image/png"),
            ("notes.jpg", b"not an image", "image/jpeg"),
        ]
    )
    at.run()
    assert not at.exception
    best = runs.default_choice(runs.shipped_models())
    assert best.run_id == "mobilenet_v2" and at.selectbox(key="cam_run").value == best.run_id
    assert any(md.value.startswith(f"**{best.label}** — ") for md in at.markdown)
    assert "notes.jpg: this is not an image we can read" in at.error[0].value
    captions = [c.value for c in at.caption]
    # at 128 px MobileNetV2's last convolution is 4×4: the automatic layer is its last 8×8 one
    assert any("at layer `block_13_expand_relu` (8×8 map)" in c for c in captions)
    verdicts = [e.value for e in [*at.info, *at.warning] if e.value.startswith("**")]
    assert not at.success  # an upload's answer cannot be checked: not green (green means right)
    assert len(verdicts) == 1  # one photo could be used: one verdict, a class or "not sure" with reasons
    assert verdicts[0].startswith("**Not sure:") or " %)**" in verdicts[0]


def test_a_boot_photographed_pointing_right_is_classified_as_its_mirror_image(gradcam_page, dataset):
    at = gradcam_page
    at.file_uploader(key="cam_files").set_value([("boot.jpg", right_facing_boot(dataset), "image/jpeg")])
    at.run()
    assert not at.exception and at.selectbox(key="cam_run").value == "mobilenet_v2"
    assert any(c.value.startswith("Classified as its mirror image") for c in at.caption)
    (verdict,) = [s.value for s in at.info if s.value.startswith("**")]  # sure; ≈ 29 % as photographed
    assert verdict.startswith("**Ankle boot (9")
    at.selectbox(key="cam_run").set_value("baseline").run()  # never shown a right-facing shoe: as it is
    assert not any(c.value.startswith("Classified as its mirror image") for c in at.caption)


def test_a_test_image_by_index_is_explained(gradcam_page, dataset):
    at = gradcam_page
    at.radio(key="cam_source").set_value("Test image by index").run()
    at.number_input(key="cam_index").set_value(42).run()
    assert not at.exception
    from fashion_lib import config

    assert any(
        f"test image #42 (true class {config.CLASS_NAMES[dataset.y_test[42]]})" in md.value
        for md in at.markdown
    )
    # the true class is known: a wrong answer is not shown as a success (the shipped model's own mistake)
    saved = evaluate.load_predictions(runs.resolve_run("mobilenet_v2"))
    sure, correct = saved.probabilities.max(axis=1) > 0.9, saved.predicted == saved.labels
    right, wrong = (int(saved.test_index[sure & (correct == c)][0]) for c in (True, False))
    for index, tone, says in ((right, "success", ": right**"), (wrong, "error", ": wrong, the true class")):
        at.number_input(key="cam_index").set_value(index).run()
        assert any(says in e.value for e in getattr(at, tone)), [e.value for e in [*at.success, *at.error]]


def test_explaining_a_chosen_class_and_an_earlier_layer(gradcam_page):
    at = gradcam_page
    at.selectbox(key="cam_run").set_value("baseline").run()
    at.radio(key="cam_source").set_value("Test image by index").run()
    at.selectbox(key="cam_class").set_value("Shirt")
    at.selectbox(key="cam_layer").set_value("conv1_relu")
    at.run()
    assert any("Explaining 'Shirt' at layer `conv1_relu` (28×28 map)" in c.value for c in at.caption)
