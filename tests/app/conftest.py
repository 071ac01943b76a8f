"""AppTest helpers: each page is tested directly from its file."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app.navigation import PAGES_DIR


def page_test(name: str) -> AppTest:
    """The page's own file; Home through the app's entry point (its page links need the navigation)."""
    if name == "home.py":
        return AppTest.from_file(str(PAGES_DIR.parent / "app" / "main.py"), default_timeout=180)
    return AppTest.from_file(str(PAGES_DIR / name), default_timeout=180)


@pytest.fixture
def eda_page(dataset) -> AppTest:
    return page_test("eda.py").run()


@pytest.fixture
def augmentation_page(dataset) -> AppTest:
    return page_test("augmentation.py").run()
