"""EDA statistics, checked against direct numpy computations on real data and synthetic cases."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_lib import config, figures, stats


@pytest.fixture(scope="module")
def small(dataset):
    """A fixed 2,000-image slice of the real training set."""
    return dataset.x_train[:2000], dataset.y_train[:2000]


def test_class_distribution_counts_and_shares(dataset):
    table = stats.class_distribution({"train": dataset.y_train, "test": dataset.y_test})
    train = table[table["split"] == "train"]
    assert list(train["count"]) == [6000] * 10 and np.allclose(train["share"], 0.1)
    assert table[table["split"] == "test"]["count"].sum() == 10000


def test_balance_verdict_on_balanced_and_skewed_labels(dataset):
    balanced = stats.balance_verdict(dataset.y_train)
    assert balanced.max_min_ratio == 1.0 and balanced.chi_square == 0.0 and balanced.p_value == 1.0
    assert balanced.balanced and "balanced" in balanced.sentence("Train")
    skewed = stats.balance_verdict(np.array([0] * 500 + list(range(1, 10)) * 50))
    assert skewed.max_min_ratio == 10.0 and skewed.p_value < 1e-6 and not skewed.balanced


def test_pixel_table_matches_numpy(small):
    x, y = small
    table = stats.per_class_pixel_table(x, y).set_index("class")
    shirts = x[y == 6]
    assert table.loc["Shirt", "mean"] == pytest.approx(shirts.mean())
    assert table.loc["Shirt", "std"] == pytest.approx(shirts.std())
    assert table.loc["Shirt", "zero fraction"] == pytest.approx((shirts == 0).mean())
    assert table["images"].sum() == len(x)


def test_histograms_count_every_pixel_once(small):
    x, y = small
    hist = stats.pixel_histograms(x, y)
    everything = hist[hist["class"] == "all classes"]
    assert everything["count"].sum() == x.size
    assert everything.set_index("intensity").loc[0, "count"] == (x == 0).sum()
    per_class = hist[hist["class"] != "all classes"].groupby("intensity")["count"].sum()
    assert np.array_equal(per_class.to_numpy(), everything["count"].to_numpy())


def test_mean_and_std_images_match_numpy(small):
    x, y = small
    means, stds = stats.class_mean_images(x, y), stats.class_std_images(x, y)
    assert means.shape == stds.shape == (10, 28, 28)
    assert np.allclose(means[3], x[y == 3].mean(axis=0)) and np.allclose(stds[3], x[y == 3].std(axis=0))


def test_correlation_of_known_images():
    # Class 1 is class 0 brightened (correlation 1), class 2 is its negative (correlation -1); the other
    # seven are independent noise (seeds other than the base's, which would tie with class 1).
    base = np.random.default_rng(0).random((28, 28))
    means = np.stack(
        [base, 2 * base + 5, -base] + [np.random.default_rng(i).random((28, 28)) for i in range(1, 8)]
    )
    corr = stats.mean_image_correlation(means)
    assert corr[0, 1] == pytest.approx(1.0) and corr[0, 2] == pytest.approx(-1.0)
    top = stats.most_correlated_pairs(corr, top=1).iloc[0]
    assert (top["class A"], top["class B"]) == (config.CLASS_NAMES[0], config.CLASS_NAMES[1])


def test_shirt_pullover_correlation_is_the_real_number(dataset):
    means = stats.class_mean_images(dataset.x_train, dataset.y_train)
    corr = stats.mean_image_correlation(means)
    direct = np.corrcoef(means[6].ravel(), means[2].ravel())[0, 1]
    assert stats.pair_correlation(corr, "Shirt", "Pullover") == pytest.approx(direct)


def test_sample_indices_are_of_the_asked_class_and_seeded(dataset):
    picked = stats.sample_indices(dataset.y_train, [6, 2], per_class=5, seed=3)
    assert set(picked) == {6, 2}
    assert all((dataset.y_train[idx] == c).all() and len(idx) == 5 for c, idx in picked.items())
    again = stats.sample_indices(dataset.y_train, [6, 2], per_class=5, seed=3)
    assert all(np.array_equal(picked[c], again[c]) for c in picked)


def test_pca_embedding_is_cached_on_disk_and_reloaded(small, tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    x, y = small
    first = stats.pca_embedding(x, y)
    assert first.coords.shape == (2000, 2) and 0 < sum(first.explained_variance) < 1
    assert list((tmp_path / "cache" / "embeddings").glob("pca-*.npz"))
    again = stats.pca_embedding(x, y)
    assert np.array_equal(first.coords, again.coords)
    axes = figures.embedding_scatter(first, "PCA").layout  # each axis says what it is
    share = first.explained_variance[0]
    assert axes.xaxis.title.text == f"principal component 1 ({100 * share:.1f} % of the pixel variance)"


def test_tsne_embedding_of_a_stratified_subset(small, tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    x, y = small
    emb = stats.tsne_embedding(x, y, n=300, seed=0)
    assert emb.coords.shape == (300, 2)
    assert np.array_equal(np.bincount(emb.labels, minlength=10), np.full(10, 30))
    assert stats.tsne_cache_path(300, 0).is_file()
    assert figures.embedding_scatter(emb, "t-SNE").layout.xaxis.title.text.startswith("t-SNE 1 (no unit")


def test_class_mix_counts_a_selection():
    mix = stats.class_mix(np.array([6, 6, 6, 2]))
    assert list(mix["class"]) == ["Shirt", "Pullover"] and list(mix["count"]) == [3, 1]
    assert mix["share"].tolist() == [0.75, 0.25]


@pytest.mark.parametrize(
    ("model", "low", "high"),
    [("baseline", 0.0, 1.0), ("efficientnet_b0", 0.0, 255.0), ("mobilenet_v2", -1.0, 1.0)],
)
def test_normalization_uses_the_models_own_input_layers(model, low, high):
    images = np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)])
    out = stats.normalized_pixels(images, model)
    assert out.min() == pytest.approx(low) and out.max() == pytest.approx(high, rel=1e-5)


def test_a_selection_gallery_takes_every_class_in_turn():
    labels = np.array([6] * 1000 + [8] * 52)  # a lasso over 1,000 shirts and 52 bags
    selected = np.arange(1052)
    shown = stats.selection_sample(selected, labels, 40)
    assert len(shown) == 40 and np.sum(labels[shown] == 8) == 20  # the bags are not hidden behind shirts
    only_bags = stats.selection_sample(selected, labels, 40, classes=[8])
    assert len(only_bags) == 40 and set(labels[only_bags]) == {8}


def test_typed_indices_are_checked():
    assert stats.parse_indices("12, 3045,7", 60000) == [12, 3045, 7]
    with pytest.raises(ValueError, match="whole numbers"):
        stats.parse_indices("12, x", 60000)
    with pytest.raises(ValueError, match="between 0 and 59999"):
        stats.parse_indices("60000", 60000)


def test_preview_samples_are_of_the_class_and_repeatable():
    labels = np.repeat(np.arange(10), 100)
    picked = stats.preview_sample(labels, 3, 5, seed=1)
    assert len(picked) == 5 and set(labels[picked]) == {3} and picked == stats.preview_sample(labels, 3, 5, 1)


def test_the_normalization_histograms_compare_shares_not_counts(dataset):
    """A transfer model's input holds 3 × (32/28)² as many values as the raw image: counts made its bars
    taller for no reason."""
    raw = dataset.x_train[:20]
    after = stats.normalized_pixels(raw, "mobilenet_v2")
    assert after.size > 3 * raw.size
    fig = figures.value_histograms(raw, after, "model input")
    assert [round(float(sum(bar.y)), 6) for bar in fig.data] == [1.0, 1.0]
    assert fig.layout.yaxis.title.text == "share of the values (log)"


def test_an_embedding_cache_that_loads_but_holds_the_wrong_arrays_is_recomputed(small, tmp_path, monkeypatch):
    """Files with the wrong keys or shapes went straight to the page: KeyError 'ratio', IndexError."""
    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    x, y = small
    first = stats.pca_embedding(x, y)
    (pca_file,) = (tmp_path / "cache" / "embeddings").glob("pca-*.npz")
    for damage in ({"coords": first.coords}, {"coords": first.coords[:5], "ratio": np.ones(2)}):
        np.savez(pca_file, **damage)
        again = stats.pca_embedding(x, y)
        assert np.allclose(again.coords, first.coords, atol=1e-4) and len(again.explained_variance) == 2
    stats.tsne_embedding(x, y, n=300, seed=0)
    assert stats.tsne_cached(y, 300)
    for damage in (
        {"coords": np.zeros((300, 2))},
        {"coords": np.zeros((300, 2)), "index": np.full(300, 10**9)},
    ):
        np.savez(stats.tsne_cache_path(300, 0), **damage)
        assert not stats.tsne_cached(y, 300) and not stats.tsne_cache_path(300, 0).exists()  # offered again
