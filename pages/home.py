"""Home: what the app does, where the data came from, which models and runs exist, links to the pages."""

import pandas as pd
import streamlit as st

from app.navigation import available_pages
from app.widgets import dataset_or_explain
from fashion_lib import config, runs

st.title("Fashion-MNIST analysis dashboard")
st.markdown(
    "Understand an image classifier end to end on **Fashion-MNIST** (70,000 grayscale 28×28 product images, "
    "10 classes): explore the data, preview augmentation, train a small CNN baseline against "
    "EfficientNetB0 / MobileNetV2 transfer learning, drill into the errors, and see where a model looks."
)

with st.container(key="pages"):
    st.subheader("Pages")
    for entry in available_pages()[1:]:
        st.page_link(str(entry.path), label=f"{entry.title} — {entry.blurb}", icon=entry.icon)
    if len(available_pages()) == 1:
        st.caption("More pages (EDA, training, error analysis, Grad-CAM …) appear here as they are built.")

with st.container(key="data"):
    st.subheader("Data")
    ds = dataset_or_explain()
    if ds is not None:
        src = ds.source
        cols = st.columns(4)
        cols[0].metric("Training images", f"{len(ds.y_train):,}")
        cols[1].metric("Test images", f"{len(ds.y_test):,}")
        cols[2].metric("Classes", config.NUM_CLASSES)
        cols[3].metric("Load + verify", f"{src.load_seconds:.2f} s")
        if src.verified:
            detail = (
                "bytes identical to Zalando's originals (MD5)"
                if src.byte_identical
                else "repacked files, decoded content identical to the originals"
            )
            st.success(f"Verified: IDX headers, shapes and checksums of all four files pass — {detail}.")
        st.markdown(f"**Source:** {src.description} — `{src.folder}`")
        counts = pd.DataFrame(
            {"class": config.CLASS_NAMES, "train": ds.class_counts("train"), "test": ds.class_counts("test")}
        )
        with st.expander("Images per class and file checks"):
            st.dataframe(counts, hide_index=True)
            st.dataframe(
                pd.DataFrame(
                    [
                        {"file": c.name, "content verified": c.content_ok, "original bytes": c.original_bytes}
                        for c in src.files
                    ]
                ),
                hide_index=True,
            )

with st.container(key="models"):
    st.subheader("Models and runs")
    all_runs = runs.list_runs()
    if all_runs:
        st.dataframe(
            pd.DataFrame(runs.run_rows(all_runs)),
            hide_index=True,
        )
    else:
        st.info(f"No trained models yet. Runs will be stored under `{config.runs_dir()}`.")

with st.expander("Settings (environment variables)"):
    current = config.current_settings()
    st.table(
        pd.DataFrame(
            [
                {"variable": s.name, "value now": current[s.name], "default": s.default, "what": s.help}
                for s in config.SETTINGS
            ]
        ).set_index("variable")
    )
