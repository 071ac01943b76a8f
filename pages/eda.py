"""EDA: class balance, samples, pixel statistics, class similarity, embeddings, normalization."""

import numpy as np
import pandas as pd
import streamlit as st

from app import widgets
from fashion_lib import config, data, figures, models, stats

NAMES = list(config.CLASS_NAMES)
PCA_SHOWN = 10_000
TSNE_SIZES = (5000, 10000)

ds = widgets.dataset_or_stop()
st.title("Explore the data")
widgets.data_source_banner(ds)

tab_classes, tab_samples, tab_pixels, tab_similarity, tab_embedding, tab_norm = st.tabs(
    ["Classes", "Samples", "Pixel intensity", "Class similarity", "Embedding", "Normalization"]
)

with tab_classes:
    table = stats.class_distribution({"train": ds.y_train, "test": ds.y_test})
    st.plotly_chart(figures.class_distribution_chart(table), key="class_distribution")
    for split, labels in (("Train", ds.y_train), ("Test", ds.y_test)):
        st.markdown(stats.balance_verdict(labels).sentence(split))

with tab_samples:
    if "eda_seed" not in st.session_state:
        st.session_state.eda_seed = 0

    def new_samples() -> None:
        st.session_state.eda_seed += 1

    left, middle, right = st.columns([3, 1, 1])
    chosen = left.multiselect("Classes", NAMES, default=NAMES, key="eda_classes")
    per_class = middle.slider("Images per class", 1, 10, 6, key="eda_per_class")
    split = right.radio("Split", ["train", "test"], horizontal=True, key="eda_split")
    seed_col, button_col = st.columns([1, 4])
    seed_col.number_input("Seed", min_value=0, step=1, key="eda_seed")
    button_col.button("New samples", on_click=new_samples, icon=":material/shuffle:")
    images, labels = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    picked = stats.sample_indices(
        labels, sorted(NAMES.index(n) for n in chosen), per_class, st.session_state.eda_seed
    )
    st.caption(f"Captions are {split}-set indices, to cite an image.")
    for c, idx in picked.items():
        st.markdown(f"**{NAMES[c]}**")
        widgets.image_grid(images[idx], [f"#{i}" for i in idx], columns=10, key=f"samples_{c}")

with tab_pixels:
    pixel = widgets.pixel_statistics()
    show = st.multiselect(
        "Histogram of",
        ["all classes", *NAMES],
        default=["all classes", "Shirt", "Pullover"],
        key="hist_classes",
    )
    log_y = st.toggle("Log scale", value=True, key="hist_log")
    st.plotly_chart(figures.intensity_histogram(pixel["histograms"], show, log_y), key="intensity_histogram")
    st.dataframe(
        pixel["table"],
        hide_index=True,
        column_config={
            "mean": st.column_config.NumberColumn(format="%.1f"),
            "std": st.column_config.NumberColumn(format="%.1f"),
            "zero fraction": st.column_config.NumberColumn(format="percent"),
        },
    )
    st.markdown("**Mean image per class** (training set)")
    st.plotly_chart(figures.image_facets(pixel["means"], NAMES), key="mean_images")
    st.markdown("**Standard-deviation image per class** — where the class varies")
    st.plotly_chart(figures.image_facets(pixel["stds"], NAMES, colorscale="viridis"), key="std_images")

with tab_similarity:
    pixel = widgets.pixel_statistics()
    corr = pixel["correlation"]
    st.plotly_chart(figures.correlation_heatmap(corr), key="correlation")
    shirt_pullover = stats.pair_correlation(corr, "Shirt", "Pullover")
    claim = "above" if shirt_pullover > 0.85 else "not above"
    st.markdown(
        f"Shirt / Pullover mean-image correlation: **{shirt_pullover:.3f}** — {claim} the 0.85 the original "
        "design claimed."
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
        f"Correlation {stats.pair_correlation(corr, a, b):.3f}; mean absolute difference of the mean images "
        f"{np.abs(mean_a - mean_b).mean():.1f} grey levels (of 255)."
    )

with tab_embedding:
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
        ratio = embedding.explained_variance
        title = f"PCA of all 60,000 training images — components explain {ratio[0]:.1%} and {ratio[1]:.1%}"
    else:
        n = st.selectbox("t-SNE sample (stratified)", TSNE_SIZES, key="tsne_n")
        if stats.tsne_cache_path(n, 0).is_file() or st.button(
            f"Compute t-SNE of {n:,} images (about {n // 5000} min, once per machine)", key="tsne_go"
        ):
            embedding = widgets.tsne_embedding(n)
            title = f"t-SNE of a stratified sample of {n:,} training images"
        else:
            st.info("t-SNE has not been computed on this machine yet.")
    if embedding is not None:
        st.caption("Click a point to see its image; drag a box or lasso to see a gallery of the selection.")
        with st.container(key="embedding_chart"):
            event = st.plotly_chart(
                figures.embedding_scatter(embedding.coords, embedding.labels, embedding.index, title),
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
                    mix,
                    hide_index=True,
                    column_config={"share": st.column_config.NumberColumn(format="percent")},
                )
                shown = selected[:40]
                st.caption(f"Showing the first {len(shown)} of the selection (captions: index, class).")
                widgets.image_grid(
                    ds.x_train[shown], [f"#{i} {NAMES[ds.y_train[i]]}" for i in shown], columns=10
                )

with tab_norm:
    st.markdown(
        "Each model does its own preprocessing inside its graph, so every caller feeds raw 0–255 pixels. "
        "These histograms run a sample of 500 training images through each model's real input layers."
    )
    rows = []
    for model in models.MODEL_NAMES:
        raw, after = widgets.normalized_sample(model)
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
        st.plotly_chart(figures.value_histograms(raw, after, "model input"), key=f"norm_{model}")
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.warning(
        "Dividing by 255 *before* an EfficientNet (which rescales inside) squeezes every image into "
        "[0, 1/255] — nearly black — which is how the original prototype collapsed to about 10 % accuracy."
    )
