"""Augmentation config: JSON round-trip, identity, seeded reproducibility, label-risk warnings, presets."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_lib import augment


@pytest.fixture(scope="module")
def images(dataset):
    return dataset.x_train[:8]


def test_config_round_trips_through_json():
    cfg = augment.AugmentConfig(
        flip_horizontal=True, rotation=0.05, zoom=0.1, translation=0.1, contrast=0.2, erasing=0.5, seed=7
    )
    assert augment.AugmentConfig.from_json(cfg.to_json()) == cfg


def test_settings_stored_before_random_erasing_existed_load_without_it():
    stored = {"flip_horizontal": True, "rotation": 0.05, "zoom": 0.0, "translation": 0.0, "contrast": 0.0}
    cfg = augment.AugmentConfig.from_dict(stored)
    assert cfg.erasing == 0.0 and cfg.describe() == "horizontal flips, rotation ±18°"


def test_random_erasing_replaces_one_rectangle_in_the_share_of_images_asked():
    grey = np.full((400, 28, 28), 128, np.uint8)
    every = augment.augment_batch(grey, augment.AugmentConfig(erasing=1.0, seed=1))
    for image in every[:50]:
        rows, cols = np.nonzero(image != 128)
        assert len(rows)  # erased: noise where the grey was
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        box = (bottom - top) * (right - left) / 28**2
        assert 0.01 <= box <= 0.4  # one rectangle of 2–33 % of the image (rounded to whole pixels)
        inside = image[top:bottom, left:right]
        assert np.mean(inside != 128) > 0.9  # filled with noise throughout, not scattered pixels
    half = augment.augment_batch(grey, augment.AugmentConfig(erasing=0.5, seed=1))
    share = np.mean((half != 128).reshape(400, -1).any(axis=1))
    assert 0.4 < share < 0.6
    assert np.array_equal(half, augment.augment_batch(grey, augment.AugmentConfig(erasing=0.5, seed=1)))
    assert "random erasing in 50 % of images" in augment.AugmentConfig(erasing=0.5).describe()
    assert "random erasing in 0.4 % of images" in augment.AugmentConfig(erasing=0.004).describe()


def test_zero_strength_config_is_the_identity(images):
    cfg = augment.AugmentConfig()
    assert cfg.is_identity and augment.build_layers(cfg) == []
    assert np.array_equal(augment.augment_batch(images, cfg), images)


def test_seeded_runs_are_reproducible_and_seeds_differ(images):
    cfg = augment.AugmentConfig(rotation=0.1, zoom=0.2, translation=0.1, seed=3)
    first, again = augment.augment_batch(images, cfg), augment.augment_batch(images, cfg)
    assert np.array_equal(first, again)
    other = augment.augment_batch(
        images, augment.AugmentConfig(rotation=0.1, zoom=0.2, translation=0.1, seed=4)
    )
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, images)


def test_horizontal_flip_of_a_known_image():
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, :, :5] = 255  # a bar on the left edge
    flipped = augment.apply_extreme(image, augment.AugmentConfig(flip_horizontal=True))
    assert flipped[0, :, -5:].min() == 255 and flipped[0, :, :-5].max() == 0


def test_out_of_range_strength_is_refused():
    with pytest.raises(ValueError, match="rotation"):
        augment.AugmentConfig(rotation=0.9)
    with pytest.raises(ValueError, match="erasing"):
        augment.AugmentConfig(erasing=1.5)


def test_label_risks_follow_the_settings():
    assert augment.label_risks(augment.AugmentConfig(flip_horizontal=True, rotation=0.05)) == []
    risks = augment.label_risks(augment.AugmentConfig(flip_vertical=True, rotation=0.25, zoom=0.4))
    assert [r.setting for r in risks] == ["vertical flip", "rotation", "zoom"]
    assert "Ankle boot" in risks[0].example_classes and "90°" in risks[1].message


def test_vertical_flip_worst_case_turns_a_boot_upside_down(dataset):
    boot = dataset.x_train[dataset.y_train == 9][:1]
    flipped = augment.apply_extreme(boot, augment.AugmentConfig(flip_vertical=True))
    assert np.array_equal(flipped[0], boot[0][::-1])


def test_presets_save_list_and_load(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    cfg = augment.AugmentConfig(rotation=0.05, seed=2)
    augment.save_preset("gentle", cfg)
    assert augment.list_presets() == ["gentle"] and augment.load_preset("gentle") == cfg
    with pytest.raises(ValueError, match="no augmentation preset named 'wild'"):
        augment.load_preset("wild")
    with pytest.raises(ValueError, match="preset name"):
        augment.save_preset("  /// ", cfg)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"flip_horizontal": "no"}, "must be true or false"),  # a truthy string used to turn flips on
        ({"flip_vertical": 1}, "must be true or false"),
        ({"seed": "abc"}, "whole number"),
        ({"seed": 1.5}, "whole number"),
        ({"rotation": "0.1"}, "must be a number"),
        ({"zoom": True}, "must be a number"),
    ],
)
def test_wrongly_typed_settings_are_refused_with_what_is_wrong(values, words):
    with pytest.raises(ValueError, match=words):
        augment.AugmentConfig.from_dict(values)
