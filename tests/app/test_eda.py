"""EDA page (AppTest): renders every section from real data; widgets change what is shown."""

from __future__ import annotations

from fashion_lib import config


def markdown_text(at) -> str:
    return "\n".join(md.value for md in at.markdown)


def open_tab(at, name: str):
    """Click a tab: the page reruns and draws that tab only."""
    at.session_state["eda_tab"] = name
    return at.run()


TAB_CONTENT = {  # something each tab, and only that tab, draws
    "Classes": "Train: balanced — largest/smallest class ratio 1.00",
    "Samples": "Under each row: the train-set indices of its images",
    "Pixel intensity": "**Mean image per class** (training set)",
    "Class similarity": "Shirt / Pullover mean-image correlation:",
    "Embedding": "Click a point to see its image",
    "Normalization": "EfficientNet",
}


def page_text(at) -> str:
    return "\n".join(e.value for e in [*at.markdown, *at.caption, *at.info, *at.warning])


def test_eda_renders_every_tab_and_only_the_open_one(eda_page):
    at = eda_page
    assert not at.exception
    assert [t.label for t in at.tabs] == list(TAB_CONTENT)
    for name, marker in TAB_CONTENT.items():
        if name != "Classes":
            open_tab(at, name)
        assert not at.exception, name
        text = page_text(at)
        assert marker in text, name
        others = [m for n, m in TAB_CONTENT.items() if n != name]
        assert not any(m in text for m in others), name


def test_balance_and_correlation_numbers_come_from_the_data(eda_page, dataset):
    import numpy as np

    from fashion_lib import stats

    means = stats.class_mean_images(dataset.x_train, dataset.y_train)
    r = np.corrcoef(means[6].ravel(), means[2].ravel())[0, 1]
    assert "Train: balanced" in markdown_text(eda_page)
    assert f"**{r:.3f}**" in markdown_text(open_tab(eda_page, "Class similarity"))


def sample_captions(at) -> list[str]:
    """The captions of the sample rows: '<class>: #index, #index, …'."""
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    return [c for c in captions if ": #" in c]


def test_new_samples_button_changes_the_samples(eda_page):
    at = open_tab(eda_page, "Samples")
    before = sample_captions(at)
    assert len(before) == 10  # one row per class
    seed_before = at.session_state["eda_seed"]
    at.button(key="eda_new").click().run()
    assert at.session_state["eda_seed"] == seed_before + 1
    after = sample_captions(at)
    assert len(after) == 10 and after != before


def test_choosing_fewer_classes_and_images_shrinks_the_grid(eda_page, dataset):
    at = open_tab(eda_page, "Samples")
    at.multiselect(key="eda_classes").set_value(["Shirt", "Pullover"])
    at.slider(key="eda_per_class").set_value(2)
    at.run()
    captions = sample_captions(at)
    assert [c.split(":")[0] for c in captions] == ["Pullover", "Shirt"]
    for caption in captions:  # two images each, and they are of that class
        indices = [int(part.strip().lstrip("#")) for part in caption.split(":")[1].split(",")]
        assert len(indices) == 2
        assert all(config.CLASS_NAMES[dataset.y_train[i]] == caption.split(":")[0] for i in indices)


def test_difference_view_follows_the_chosen_classes(eda_page, dataset):
    import numpy as np

    from fashion_lib import stats

    at = open_tab(eda_page, "Class similarity")
    at.selectbox(key="diff_a").set_value("Sneaker")
    at.selectbox(key="diff_b").set_value("Ankle boot")
    at.run()
    means = stats.class_mean_images(dataset.x_train, dataset.y_train)
    difference = np.abs(means[7] - means[9]).mean()
    assert any(
        c.value.startswith("Sneaker and Ankle boot:") and f"{difference:.1f} grey levels" in c.value
        for c in at.caption
    )
    assert not at.exception


def test_embedding_switches_to_tsne_without_computing_until_asked(eda_page, monkeypatch, tmp_path):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path))  # no t-SNE computed on this "machine"
    at = open_tab(eda_page, "Embedding")
    at.radio(key="embedding_method").set_value("t-SNE").run()
    assert not at.exception
    assert any("The t-SNE of 5,000 images is not on this machine" in i.value for i in at.info)
    assert at.button(key="tsne_go").label == "Compute t-SNE of 5,000 images"


def test_a_failed_or_vanished_t_sne_is_offered_again_never_a_loop(eda_page, monkeypatch, tmp_path):
    """A failed job kept its error in every session with no way to try again, and a finished one whose file
    was then removed reran the page for ever (drawing the PCA under "t-SNE")."""
    import time

    from app import widgets

    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    jobs = widgets._background_jobs()
    try:
        for job, words in (
            (
                widgets.Background(time.time(), done=True, error="No space left on device"),
                "last t-SNE failed",
            ),
            (widgets.Background(time.time(), done=True), None),  # done, but its file has gone since
        ):
            jobs["tsne-5000"] = job
            at = open_tab(eda_page, "Embedding")
            at.radio(key="embedding_method").set_value("t-SNE").run()
            assert not at.exception and at.button(key="tsne_go").label == "Compute t-SNE of 5,000 images"
            assert not at.get("plotly_chart") and not at.get("progress")
            assert [e.value for e in at.error if words and words in e.value] or words is None
    finally:
        jobs.pop("tsne-5000", None)
