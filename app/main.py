"""Entry point: ``streamlit run app/main.py``. Page config and navigation over pages/."""

from __future__ import annotations

import streamlit as st

from app.navigation import available_pages


def run() -> None:
    st.set_page_config(page_title="Fashion-MNIST dashboard", page_icon=":material/checkroom:", layout="wide")
    entries = available_pages()
    pages = [
        st.Page(entry.path, title=entry.title, icon=entry.icon, default=(i == 0))
        for i, entry in enumerate(entries)
    ]
    current = st.navigation(pages)
    # Settings saved again on every run (Streamlit's documented way to interrupt the widget clean-up): a
    # value saved by the script is not a widget's, so leaving the page does not drop it, and the widget
    # takes it up when its page is drawn again. In a browser a page's widget values are gone by the time
    # the next page's run starts, so the page's own run must save them too (checked in Chromium: a value
    # typed, the page left and opened again, reads back). Streamlit's warning about a widget with a default
    # whose key was also set through Session State is meant for this very pattern: turned off in
    # .streamlit/config.toml.
    for entry in entries:
        for key in entry.keeps:
            if key in st.session_state:
                st.session_state[key] = st.session_state[key]
    current.run()


if __name__ == "__main__":
    run()
