"""Saying "not sure": conversion-quality checks on crafted photos, the decision on known probabilities,
and the familiarity distance of the shipped baseline on test images and on things that are not clothes."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fashion_lib import confidence, config, models, photo_render, photos, runs
from tests import npz_damage
from tests.unit.test_photos import encode, silhouette


def converted(image: np.ndarray) -> photos.Conversion:
    return photos.convert_upload(encode(image, "PNG"))[1]


def test_a_clean_product_photo_has_no_conversion_problem():
    assert confidence.conversion_problems(converted(silhouette())) == []


def test_a_product_cut_off_by_the_frame_is_flagged():
    cut = silhouette(h=300, w=500, box=(0, 60, 200, 300))  # runs off the left and bottom edges
    assert any("cut off" in p for p in confidence.conversion_problems(converted(cut)))


def test_a_speck_is_almost_nothing_and_a_blank_photo_is_refused():
    speck = silhouette(h=400, w=400, box=(200, 200, 206, 206))
    problems = confidence.conversion_problems(converted(speck))
    assert any("almost nothing" in p for p in problems)
    with pytest.raises(photos.PhotoError, match="no product"):
        converted(np.full((300, 300, 3), 255, np.uint8))


def test_an_uploaded_fashion_mnist_image_is_never_judged_as_a_photo(dataset):
    as_is = converted(dataset.x_test[0])
    assert as_is.mask_method == photos.AS_IS and confidence.conversion_problems(as_is) == []


def test_the_decision_says_why():
    sure = confidence.decide(np.eye(10)[3] * 0.9 + 0.01)
    assert sure.sure and sure.label == "Dress" and sure.sentence() == "Dress (91.0 %)"
    unsure = confidence.decide(np.full(10, 0.1))
    assert not unsure.sure and "only 10.0 % sure" in unsure.sentence()
    stats = confidence.Familiarity("x", np.zeros((10, 2)), np.eye(2), threshold=4.0)
    far = confidence.decide(np.eye(10)[3], distance=9.0, stats=stats)
    assert not far.sure and "unlike the images the model learnt from" in far.reasons[0]
    assert confidence.decide(np.eye(10)[3], distance=1.0, stats=stats).sure


def shipped_copy(name: str, to: Path) -> Path:
    """A copy of a shipped model's folder without the statistics shipped beside it."""
    shutil.copytree(
        config.CACHED_MODELS_DIR / name, to, ignore=shutil.ignore_patterns(confidence.FAMILIARITY_FILE)
    )
    return to


def test_the_shipped_baseline_knows_test_images_and_doubts_other_things(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))
    folder = shipped_copy("baseline", tmp_path / "baseline")
    model_file = folder / runs.MODEL_FILE
    model = models.load_model(model_file)
    held_out = confidence.held_out(folder, dataset)
    assert len(held_out) == 3000  # the shipped run's validation split: 5 % of 60,000, never trained on
    stats = confidence.familiarity(model, model_file, dataset, held_out)
    monkeypatch.setattr(confidence, "features", lambda *a, **k: pytest.fail("recomputed"))
    again = confidence.familiarity(model, model_file, dataset, held_out)  # read from the cache
    monkeypatch.undo()
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))
    assert again.threshold == stats.threshold and stats.layer == "head_hidden"
    assert np.array_equal(again.inverse, stats.inverse) and np.array_equal(again.means, stats.means)
    # it has never seen a right-facing shoe: photos as they are (measured: 5.9 points lost)
    assert stats.mirror_cost > 0.03 and again.mirror_cost == stats.mirror_cost and not stats.mirror
    # the statistics shipped beside it are what this code makes (up to another machine's rounding)
    shipped = confidence.read(
        config.CACHED_MODELS_DIR / "baseline" / confidence.FAMILIARITY_FILE, confidence.digest(model_file)
    )
    assert shipped is not None and shipped.layer == stats.layer and shipped.mirror_cost == stats.mirror_cost
    assert shipped.threshold == pytest.approx(stats.threshold, rel=1e-4)
    features_of = confidence.with_features(model, stats.layer)
    test_images = dataset.x_test[:500]
    test_features = confidence.features(features_of, test_images)
    assert np.allclose(shipped.distances(test_features), stats.distances(test_features), rtol=1e-4)
    flagged = np.mean(stats.distances(test_features) > stats.threshold)
    assert flagged < 0.05  # 1 % of the validation images lie beyond the threshold by construction
    others = np.stack(
        [
            photos.convert_upload(photo_render.not_clothes(kind, seed))[1].image
            for seed in range(10)
            for kind in photo_render.OUT_OF_CLASS
        ]
    )
    far = np.mean(stats.distances(confidence.features(features_of, others)) > stats.threshold)
    assert far > 0.3  # measured: 58 % with the confidence rule too (bench.photo_realistic)


class Recomputed(Exception):
    pass


def recompute(*args, **kwargs):
    raise Recomputed


@pytest.fixture
def kept(tmp_path, monkeypatch):
    """A stand-in model file with statistics for it kept beside it; making statistics raises Recomputed."""
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))
    model_file = tmp_path / "model" / runs.MODEL_FILE
    model_file.parent.mkdir()
    model_file.write_bytes(b"the model's bytes")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    inverse = a @ a.T + np.eye(5)
    inverse = (inverse + inverse.T) / 2
    stats = confidence.Familiarity("head_hidden", rng.normal(size=(10, 5)), inverse, 3.5, 0.002)
    beside = model_file.parent / confidence.FAMILIARITY_FILE
    confidence.save(stats, beside, confidence.digest(model_file))
    monkeypatch.setattr(confidence, "feature_layer", recompute)
    return SimpleNamespace(model_file=model_file, stats=stats, beside=beside)


def stand_in_model(width: int, layer: str = "head_hidden"):
    def get_layer(name):
        if name != layer:
            raise ValueError(f"no layer {name}")
        return SimpleNamespace(output=SimpleNamespace(shape=(None, width)))

    return SimpleNamespace(get_layer=get_layer)


def test_statistics_kept_beside_a_model_are_used_only_for_that_file_recipe_and_model(kept, monkeypatch):
    with np.load(kept.beside) as stored:
        assert stored["inverse"].shape == (15,)  # the symmetric inverse's upper triangle: 5 × 6 / 2 values
    found = confidence.familiarity(None, kept.model_file, None)
    assert found.threshold == 3.5 and found.mirror and found.layer == "head_hidden"
    assert np.array_equal(found.inverse, kept.stats.inverse) and np.array_equal(found.means, kept.stats.means)
    assert confidence.known(kept.model_file, stand_in_model(5)) is not None
    # for a model without that layer, or whose layer is not as wide: not used
    assert confidence.known(kept.model_file, stand_in_model(7)) is None
    assert confidence.known(kept.model_file, stand_in_model(5, layer="head_pool")) is None
    with pytest.raises(Recomputed):
        confidence.familiarity(stand_in_model(7), kept.model_file, None)
    # made for another file, or by another recipe: not used
    assert confidence.read(kept.beside, confidence.digest(kept.model_file)[::-1]) is None
    monkeypatch.setattr(confidence, "RECIPE", confidence.RECIPE + ", changed")
    assert confidence.read(kept.beside, confidence.digest(kept.model_file)) is None


def test_statistics_in_the_cache_serve_when_the_file_beside_the_model_does_not(kept):
    cached = confidence._stats_path(confidence.digest(kept.model_file))
    confidence.save(kept.stats, cached, confidence.digest(kept.model_file))
    kept.beside.write_bytes(b"damaged")
    assert confidence.known(kept.model_file).threshold == 3.5
    cached.unlink()
    assert confidence.known(kept.model_file) is None


DAMAGE = {  # beside every way an archive is damaged (tests/npz_damage.py): entries that make no sense
    "kept before the recipe": ("recipe", None),
    "threshold not one number": ("threshold", np.array([1.0, 2.0])),
    "mirror cost empty": ("mirror_cost", np.zeros(0)),
    "threshold as text": ("threshold", np.array("1.5")),
    "threshold NaN": ("threshold", np.array(np.nan)),
    "threshold negative": ("threshold", np.array(-1.0)),
    "means NaN": ("means", np.full((10, 5), np.nan)),
    "three classes": ("means", np.zeros((3, 5))),
    "means complex": ("means", np.zeros((10, 5), complex)),
    "inverse one value": ("inverse", np.zeros(1)),
    "inverse infinite": ("inverse", np.full(15, np.inf)),
    "layer not text": ("layer", np.array(["a", "b"])),
    "a huge entry": ("padding", np.zeros(10_000_000)),  # 80 MB unpacked, 78 kB compressed: never read
    "mirror cost beyond all accuracy": ("mirror_cost", np.array(-np.inf)),
    "no features": None,
}


@pytest.mark.parametrize("how", list(DAMAGE) + list(npz_damage.WAYS))
def test_a_damaged_or_senseless_kept_file_is_not_used_and_the_statistics_are_made_again(kept, how):
    if how in npz_damage.WAYS:
        npz_damage.damage(kept.beside, how, entry="means")
    else:
        entries = npz_damage.entries(kept.beside)
        if how == "no features":
            entries.update(means=np.zeros((10, 0)), inverse=np.zeros(0))
        elif DAMAGE[how][1] is None:
            del entries[DAMAGE[how][0]]
        else:
            entries[DAMAGE[how][0]] = DAMAGE[how][1]
        with kept.beside.open("wb") as out:
            np.savez_compressed(out, **entries)
    assert confidence.read(kept.beside, confidence.digest(kept.model_file)) is None
    with pytest.raises(Recomputed):
        confidence.familiarity(None, kept.model_file, None)


def test_without_kept_statistics_or_the_dataset_there_are_none(kept, without_dataset):
    assert confidence.of_model(None, kept.model_file).threshold == 3.5  # kept ones need no dataset
    kept.beside.unlink()
    assert confidence.of_model(None, kept.model_file) is None


def test_the_distance_is_the_squared_mahalanobis_distance_to_the_nearest_class_mean():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    inverse = a @ a.T + np.eye(6)  # symmetric positive definite
    means = rng.normal(size=(10, 6))
    stats = confidence.Familiarity("x", means, inverse, threshold=1.0)
    rows = np.vstack([rng.normal(size=(5, 6)), means[3]])  # the last one sits on class 3's mean
    expected = [min(float((r - m) @ inverse @ (r - m)) for m in means) for r in rows]
    got = stats.distances(rows)
    assert np.allclose(got, expected, rtol=1e-10, atol=1e-9) and got[-1] == pytest.approx(0.0, abs=1e-9)


def leaning(image: np.ndarray) -> np.ndarray:
    """A stand-in model's probabilities: sure it is a Sneaker when the image's left half is the brighter,
    half sure it is a Sandal otherwise (a model that knows shoes pointing left only)."""
    left = image[:, :, :14].mean(axis=(1, 2)) > image[:, :, 14:].mean(axis=(1, 2))
    return np.where(left[:, None], np.eye(10)[7] * 0.9 + 0.01, np.eye(10)[5] * 0.5 + 0.05)


def photo_conversion(image: np.ndarray, method: str = "grabcut") -> photos.Conversion:
    box = (0, 0, 28, 28)
    return photos.Conversion(
        image, {"photo": image}, box, (4, 2, 24, 26), (28, 28), method, foreground_share=0.3
    )


def test_the_surer_orientation_is_kept_and_mirrors_are_allowed_only_where_they_cost_little():
    probabilities = np.array([[0.6, 0.4] + [0] * 8, [0.9, 0.1] + [0] * 8])
    mirrored = np.array([[0.1, 0.8] + [0] * 8, [0.7, 0.3] + [0] * 8])
    assert confidence.surer_mirrored(probabilities, mirrored).tolist() == [True, False]
    labels = np.array([1, 0])  # taking the mirror of the first makes it right: no cost
    assert confidence.mirror_cost(probabilities, mirrored, labels) == -0.5  # the first one is won
    assert confidence.mirror_cost(probabilities, mirrored, np.array([0, 0])) == 0.5  # the first one is lost
    stats = confidence.Familiarity("x", np.zeros((10, 2)), np.eye(2), 1.0, mirror_cost=0.0)
    assert stats.mirror and not dataclasses.replace(stats, mirror_cost=0.011).mirror
    assert not confidence.Familiarity("x", np.zeros((10, 2)), np.eye(2), 1.0).mirror  # unknown: never
    photo = photo_conversion(np.zeros((28, 28), np.uint8))
    assert confidence.tries_mirror(photo, stats)
    assert not confidence.tries_mirror(photo, dataclasses.replace(stats, mirror_cost=0.05))
    assert not confidence.tries_mirror(photo, None) and not confidence.tries_mirror(None, stats)
    assert not confidence.tries_mirror(photo_conversion(photo.image, photos.AS_IS), stats)
    turned = photos.mirror(photo)
    sure, unsure = confidence.Verdict("Sneaker", 0.9), confidence.Verdict(None, 0.4, ("unlike any",))
    assert confidence.mirror_note(turned, sure).startswith("Classified as its mirror image")
    # a landscape taken mirrored was told so under its "not sure"
    assert confidence.mirror_note(turned, unsure) is None and confidence.mirror_note(photo, sure) is None


def test_a_photo_is_classified_the_way_round_the_model_is_surer_of():
    def features_of(x, training=False):  # features: the mean of each half of the image
        halves = x[..., 0].reshape(len(x), 28, 2, 14).mean(axis=(1, 3))
        return halves, leaning(x[..., 0])

    facing_right = np.zeros((28, 28), np.uint8)
    facing_right[:, 16:] = 200
    stats = confidence.Familiarity("x", np.zeros((10, 2)), np.eye(2), 1.0, mirror_cost=0.0)
    turned, image, row = confidence.orient(features_of, facing_right, photo_conversion(facing_right), stats)
    assert turned.mirrored and (turned.image == facing_right[:, ::-1]).all()
    assert (image == turned.image).all() and row[0] > row[1]  # the features of the image classified
    facing_left = photo_conversion(facing_right[:, ::-1])
    assert confidence.orient(features_of, facing_left.image, facing_left, stats)[0] is facing_left
    as_it_is = dataclasses.replace(stats, mirror_cost=0.05)  # a model that does not know mirror images
    kept, image, row = confidence.orient(features_of, facing_right, photo_conversion(facing_right), as_it_is)
    assert not kept.mirrored and row[1] > row[0]
    assert confidence.orient(features_of, facing_right, None, stats)[0] is None  # a Fashion-MNIST image


def test_a_verdict_is_green_only_when_it_is_known_to_be_right():
    """An upload's answer was green, as a right one is: a pullover called a T-shirt looked approved."""
    verdict = confidence.Verdict("Pullover", 0.9)
    assert verdict.against("Pullover")[0] == "success" and verdict.against("Shirt")[0] == "error"
    assert verdict.against(None)[0] == "info"
    assert confidence.Verdict(None, 0.3, ("unlike any",)).against(None)[0] == "warning"
