"""AppTest helpers: each page is tested directly from its file."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app.navigation import PAGES_DIR


def page_test(name: str) -> AppTest:
    return AppTest.from_file(str(PAGES_DIR / name), default_timeout=180)


@pytest.fixture
def eda_page(dataset) -> AppTest:
    return page_test("eda.py").run()


@pytest.fixture
def augmentation_page(dataset) -> AppTest:
    return page_test("augmentation.py").run()
