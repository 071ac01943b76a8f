"""Augmentation page (AppTest): controls make one AugmentConfig, warnings follow settings, presets save."""

from __future__ import annotations

from fashion_lib import augment


def config_caption(at) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Settings:"))


def test_page_starts_with_gentle_settings_and_no_warnings(augmentation_page):
    at = augmentation_page
    assert not at.exception
    caption = config_caption(at)
    assert caption == "Settings: horizontal flips, rotation ±10°, zoom ±10 %, shift ±10 %."
    assert not at.warning and any("No setting is strong enough" in s.value for s in at.success)


def test_zero_settings_are_shown_as_the_identity(augmentation_page):
    at = augmentation_page
    at.checkbox(key="aug_flip_h").uncheck()
    for key in ("aug_rotation", "aug_zoom", "aug_translation"):
        at.slider(key=key).set_value(0)
    at.run()
    assert "the identity" in config_caption(at)


def test_controls_build_the_config_and_unsafe_settings_warn(augmentation_page):
    at = augmentation_page
    at.checkbox(key="aug_flip_v").check()
    at.slider(key="aug_rotation").set_value(90)
    at.run()
    assert "horizontal and vertical flips, rotation ±90°" in config_caption(at)  # degrees, as on the slider
    warnings = [w.value for w in at.warning]
    assert any("Vertical flip" in w for w in warnings) and any(
        "±90° lay garments on their side" in w for w in warnings
    )


def test_resample_draws_new_versions(augmentation_page):
    at = augmentation_page
    draw = at.session_state["aug_draw"]
    at.button(key="aug_resample").click().run()
    assert at.session_state["aug_draw"] == draw + 1 and not at.exception


def test_bad_indices_get_a_clear_message(augmentation_page):
    at = augmentation_page
    at.text_input(key="aug_indices").input("12, abc").run()
    assert "whole numbers" in at.error[0].value
    at.text_input(key="aug_indices").input("999999").run()
    assert "between 0 and 59999" in at.error[0].value


def test_saving_a_preset_makes_it_available_to_training(augmentation_page):
    at = augmentation_page
    at.slider(key="aug_rotation").set_value(15)
    at.text_input(key="aug_preset_name").input("gentle-test")
    at.run()
    at.button(key="aug_save").click().run()
    assert "Saved preset 'gentle-test'" in at.success[-1].value
    assert augment.load_preset("gentle-test").rotation == 15 / 360
    assert "rotation ±15°" in at.dataframe[-1].value.set_index("preset").loc["gentle-test", "settings"]


def test_a_preset_name_with_a_space_is_refused_not_renamed(augmentation_page):
    at = augmentation_page
    at.text_input(key="aug_preset_name").input("walk gentle")
    at.run()
    at.button(key="aug_save").click().run()
    assert "'walk-gentle'" in at.error[0].value and "walkgentle" not in augment.list_presets()


def test_random_erasing_slider_reaches_the_config(augmentation_page):
    at = augmentation_page
    at.slider(key="aug_erasing").set_value(0.3).run()
    assert not at.exception
    assert config_caption(at).endswith("random erasing in 30 % of images.")
