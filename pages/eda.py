"""EDA: class balance, samples, pixel statistics, class similarity, embeddings, normalization.

Only the open tab runs, and each tab is a fragment: a widget in one tab reruns that tab only."""

import time

import numpy as np
import pandas as pd
import streamlit as st

from app import widgets
from fashion_lib import config, data, figures, models, pictures, stats

NAMES = list(config.CLASS_NAMES)
PCA_SHOWN = 10_000
TSNE_SIZES = (5000, 10000)
GALLERY = 40

ds = widgets.dataset_or_stop()
st.title("Explore the data")
widgets.data_source_banner(ds)

TABS = ("Classes", "Samples", "Pixel intensity", "Class similarity", "Embedding", "Normalization")
# Only the open tab is computed and drawn (switching tabs reruns the page): the first load draws one tab's
# charts, not all six tabs' (bench.eda_speed: warm load 2.65 s with every tab drawn).
tabs = st.tabs(list(TABS), key="eda_tab", on_change="rerun")


@st.fragment
def classes() -> None:
    table = stats.class_distribution({"train": ds.y_train, "test": ds.y_test})
    st.plotly_chart(figures.class_distribution_chart(table), key="class_distribution")
    for split, labels in (("Train", ds.y_train), ("Test", ds.y_test)):
        st.markdown(stats.balance_verdict(labels).sentence(split))


@st.fragment
def samples() -> None:
    st.session_state.setdefault("eda_seed", 0)

    def new_samples() -> None:
        st.session_state.eda_seed += 1

    chosen = st.multiselect("Classes", NAMES, default=NAMES, key="eda_classes")
    left, middle, seed_col, button_col = st.columns([2, 2, 1, 1], vertical_alignment="bottom")
    per_class = left.slider("Images per class", 1, 10, 6, key="eda_per_class")
    split = middle.radio("Split", ["train", "test"], horizontal=True, key="eda_split")
    seed_col.number_input("Seed", min_value=0, step=1, key="eda_seed")
    button_col.button("New samples", on_click=new_samples, icon=":material/shuffle:", key="eda_new")
    images, labels = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    picked = stats.sample_indices(
        labels, sorted(NAMES.index(n) for n in chosen), per_class, st.session_state.eda_seed
    )
    st.caption(f"Under each row: the {split}-set indices of its images, left to right, to cite an image.")
    with st.container(key="samples"):
        for c, idx in picked.items():
            st.image(
                pictures.mosaic(images[idx], columns=10, factor=widgets.GRID_SCALE),
                caption=f"{NAMES[c]}: " + ", ".join(f"#{i}" for i in idx),
            )


@st.fragment
def pixels() -> None:
    pixel = widgets.pixel_statistics()
    show = st.multiselect(
        "Histogram of",
        ["all classes", *NAMES],
        default=["all classes", "Shirt", "Pullover"],
        key="hist_classes",
    )
    log_y = st.toggle("Log scale", value=True, key="hist_log")
    st.plotly_chart(figures.intensity_histogram(pixel["histograms"], show, log_y), key="intensity_histogram")
    table = pixel["table"].copy()
    table["zero fraction"] *= 100  # "40.59 %", the app's one way of writing a percentage
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "images": st.column_config.NumberColumn(format="localized"),
            "mean": st.column_config.NumberColumn("mean (grey level 0–255)", format="%.1f"),
            "std": st.column_config.NumberColumn("std (grey levels)", format="%.1f"),
            "zero fraction": st.column_config.NumberColumn("black pixels (0)", format="%.2f %%"),
        },
    )
    st.markdown("**Mean image per class** (training set)")
    st.plotly_chart(figures.image_facets(pixel["means"], NAMES), key="mean_images")
    st.markdown("**Standard-deviation image per class** — where the class varies")
    st.plotly_chart(figures.image_facets(pixel["stds"], NAMES, colorscale="viridis"), key="std_images")


@st.fragment
def similarity() -> None:
    pixel = widgets.pixel_statistics()
    corr = pixel["correlation"]
    st.plotly_chart(figures.correlation_heatmap(corr), key="correlation")
    shirt_pullover = stats.pair_correlation(corr, "Shirt", "Pullover")
    claim = "above" if shirt_pullover > 0.85 else "not above"
    st.markdown(
        f"Shirt / Pullover mean-image correlation: **{shirt_pullover:.3f}** — {claim} the 0.85 the original "
        f"design claimed; {stats.correlation_rank(corr, 'Shirt', 'Pullover')}."
    )
    st.markdown("**Most correlated class pairs**")
    st.dataframe(
        stats.most_correlated_pairs(corr, top=6),
        hide_index=True,
        column_config={"correlation": st.column_config.NumberColumn(format="%.3f")},
    )
    st.markdown("**How different are two classes?**")
    col_a, col_b = st.columns(2)
    a = col_a.selectbox("Class A", NAMES, index=NAMES.index("Shirt"), key="diff_a")
    b = col_b.selectbox("Class B", NAMES, index=NAMES.index("Pullover"), key="diff_b")
    mean_a, mean_b = pixel["means"][NAMES.index(a)], pixel["means"][NAMES.index(b)]
    st.plotly_chart(figures.difference_image(mean_a, mean_b, a, b), key="difference")
    st.caption(
        f"{a} and {b}: correlation {stats.pair_correlation(corr, a, b):.3f}; mean absolute difference of the "
        f"mean images {np.abs(mean_a - mean_b).mean():.1f} grey levels (of 255)."
    )


def tsne_progress(n: int) -> None:
    """While the t-SNE of ``n`` images computes (in the background), show how long it has been at it."""
    job = widgets.background(f"tsne-{n}")
    if job is None:
        return
    if job.done:
        st.rerun()  # drawn, or its error and a button to try again, by the whole page
    expected, basis = stats.tsne_expected_seconds(n)
    elapsed = time.time() - job.started
    st.progress(
        min(0.99, elapsed / expected),
        text=f"Computing t-SNE of {n:,} images: {elapsed:.0f} s so far, about {expected:.0f} s expected "
        f"({basis}). The rest of the page stays usable.",
    )


@st.fragment
def embedding_tab() -> None:
    method = st.radio("Embedding", ["PCA", "t-SNE"], horizontal=True, key="embedding_method")
    embedding = None
    if method == "PCA":
        embedding = widgets.pca_embedding()
        show_all = st.toggle(f"Show all {len(embedding.index):,} points (slower)", key="pca_all")
        if not show_all:
            keep = data.stratified_subset(embedding.labels, PCA_SHOWN, seed=0)
            embedding = stats.Embedding(
                "PCA",
                embedding.coords[keep],
                embedding.index[keep],
                embedding.labels[keep],
                embedding.explained_variance,
            )
        shown = "" if show_all else f", {len(embedding.index):,} of them drawn (stratified)"
        title = f"PCA of all 60,000 training images{shown}"
    else:
        n = st.selectbox("t-SNE sample (stratified)", TSNE_SIZES, key="tsne_n")
        job = widgets.background(f"tsne-{n}")
        if stats.tsne_cached(ds.y_train, n):
            embedding = widgets.tsne_embedding(n)
            title = f"t-SNE of a stratified sample of {n:,} training images"
        elif job is not None and not job.done:
            st.fragment(tsne_progress, run_every=1.0)(n)
        else:  # never computed, failed, or its file since removed: offered (again)
            if job is not None and job.error:
                st.error(
                    f"The last t-SNE failed ({job.error.rstrip('.')}). Try again once the cause is mended."
                )
            expected, basis = stats.tsne_expected_seconds(n)
            st.info(
                f"The t-SNE of {n:,} images is not on this machine (about {expected:.0f} s to compute: "
                f"{basis})."
            )
            if st.button(f"Compute t-SNE of {n:,} images", key="tsne_go"):
                widgets.start_background(f"tsne-{n}", stats.tsne_embedding, ds.x_train, ds.y_train, n=n)
                st.rerun(scope="fragment")
    if embedding is None:
        return
    st.caption("Click a point to see its image; drag a box or lasso to see a gallery of the selection.")
    with st.container(key="embedding_chart"):
        event = st.plotly_chart(
            figures.embedding_scatter(embedding, title),
            on_select="rerun",
            selection_mode=("points", "box", "lasso"),
            key=f"embedding_{method}",
        )
    selected = np.array(
        [int(p["customdata"]) for p in event.selection.points if "customdata" in p], dtype=int
    )
    with st.container(key="embedding_selection"):
        if len(selected) == 1:
            i = int(selected[0])
            left, right = st.columns([1, 3])
            left.image(widgets.upscale(ds.x_train[i], 8), caption=f"#{i}")
            right.markdown(f"**Training image #{i}** — class **{NAMES[ds.y_train[i]]}**")
        elif len(selected) > 1:
            mix = stats.class_mix(ds.y_train[selected])
            st.markdown(f"**{len(selected):,} images selected** — class mix:")
            st.dataframe(
                mix, hide_index=True, column_config={"share": st.column_config.NumberColumn(format="percent")}
            )
            only = st.multiselect(
                "Show only", list(mix["class"]), key="selection_classes", placeholder="every class"
            )
            shown = stats.selection_sample(
                selected, ds.y_train, GALLERY, [NAMES.index(c) for c in only] if only else None
            )
            st.caption(
                f"{len(shown)} of the selection, taken in turn from each class (captions: index, class)."
            )
            widgets.image_grid(ds.x_train[shown], [f"#{i} {NAMES[ds.y_train[i]]}" for i in shown], columns=10)


@st.fragment
def normalization() -> None:
    st.markdown(
        "Each model does its own preprocessing inside its graph, so every caller feeds raw 0–255 pixels. "
        "These histograms run a sample of 500 training images through each model's real input layers."
    )
    rows = []
    for model in models.MODEL_NAMES:
        _, after = widgets.normalized_sample(model)
        rows.append(
            {
                "model": models.DISPLAY_NAMES[model],
                "input pipeline": stats.NORMALIZATION[model],
                "min": float(after.min()),
                "max": float(after.max()),
                "mean": float(after.mean()),
            }
        )
        st.markdown(f"**{models.DISPLAY_NAMES[model]}** — {stats.NORMALIZATION[model]}")
        st.plotly_chart(widgets.value_histograms(model), key=f"norm_{model}")
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.warning(
        "Dividing by 255 *before* an EfficientNet (which rescales inside) squeezes every image into "
        "[0, 1/255] — nearly black — which is how the original prototype collapsed to about 10 % accuracy."
    )


for tab, body in zip(tabs, (classes, samples, pixels, similarity, embedding_tab, normalization), strict=True):
    if tab.open:
        with tab:
            body()
