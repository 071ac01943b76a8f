"""Entry point: ``streamlit run app/main.py``. Page config and navigation over pages/."""

from __future__ import annotations

import streamlit as st

from app.navigation import available_pages


def run() -> None:
    st.set_page_config(page_title="Fashion-MNIST dashboard", page_icon=":material/checkroom:", layout="wide")
    pages = [
        st.Page(entry.path, title=entry.title, icon=entry.icon, default=(i == 0))
        for i, entry in enumerate(available_pages())
    ]
    st.navigation(pages).run()


if __name__ == "__main__":
    run()
