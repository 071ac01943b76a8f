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
    # The other pages' settings, saved again: a value saved in a run that does not draw its widget is kept,
    # and the widget takes it up when its page is drawn again (Streamlit's documented "interrupt the
    # widget clean-up"). Not the current page's own: saving those would override what the user just set.
    for entry, page in zip(entries, pages, strict=True):
        if page.url_path != current.url_path:
            for key in entry.keeps:
                if key in st.session_state:
                    st.session_state[key] = st.session_state[key]
    current.run()


if __name__ == "__main__":
    run()
