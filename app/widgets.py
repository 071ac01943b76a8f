"""UI pieces shared by pages: cached dataset, data-source banner."""

from __future__ import annotations

import streamlit as st

from fashion_lib import data


@st.cache_resource(show_spinner="Loading and verifying Fashion-MNIST…")
def _cached_dataset() -> data.FashionMNIST:
    # One copy per process: the arrays are read-only and shared by every session.
    return data.load()


def dataset_or_stop() -> data.FashionMNIST:
    """The verified dataset; when it cannot be had, show how to provide it and stop the page."""
    try:
        return _cached_dataset()
    except data.FashionDataError as exc:
        st.error("**The Fashion-MNIST data is not available.**")
        st.code(str(exc), language=None)
        st.info("Fix it, then reload this page.")
        st.stop()
        raise  # unreachable: st.stop() raises


def data_source_banner(ds: data.FashionMNIST) -> None:
    """One line that says where the data came from and whether it was verified."""
    src = ds.source
    mark = ":material/verified:" if src.verified else ":material/error:"
    origin = "byte-identical to Zalando's originals" if src.byte_identical else "content verified"
    st.caption(
        f"{mark} Data: {len(ds.y_train):,} train + {len(ds.y_test):,} test images from {src.description} "
        f"(`{src.folder}`), {origin}."
    )
