"""Real-browser harness: a `streamlit run app/main.py` server on a free loopback port, driven by Playwright
in Debian's Chromium (Playwright cannot download its own browser here)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from fashion_lib.config import REPO_ROOT
from tests.processes import start_app, stop

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = REPO_ROOT / "test-screenshots"  # pytest-playwright empties test-results/ at each start


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def app_url(tmp_path_factory) -> str:
    """Base URL of a real Streamlit server running the app, for the whole test session."""
    proc, url = start_app(tmp_path_factory.mktemp("streamlit") / "server.log")
    try:
        yield url
    finally:
        stop(proc)
        stop_training_jobs()


def stop_training_jobs() -> None:
    """A test that failed mid-run must not leave a job holding the machine's lock."""
    from fashion_lib import jobs, lifecycle

    active = jobs.active_run()
    if active is not None:
        jobs.stop(active)
        deadline = time.monotonic() + 60
        while jobs.active_run() is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        owner = lifecycle.state_of(active).owner
        if jobs.active_run() is not None and owner is not None:
            owner.signal(signal.SIGKILL)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's Chromium (apt-get install chromium) or set CHROMIUM_PATH"
        )
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    # Streamlit scrolls inside its own container, so a tall viewport is what a full screenshot needs.
    return {**browser_context_args, "viewport": {"width": 1280, "height": 2400}}


@pytest.fixture(autouse=True, scope="session")
def _expect_timeout():
    expect.set_options(timeout=30_000)


def wait_for_script(page: Page) -> None:
    """Wait until Streamlit has finished running the page's script."""
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=60_000)


def open_page(page: Page, url: str, title: str) -> None:
    """Go to ``url`` and wait until the page titled ``title`` has rendered."""
    page.goto(url)
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()
    wait_for_script(page)


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.wait_for_timeout(300)  # let expanders and charts finish their transitions
    page.screenshot(path=str(path), animations="disabled")
    return path
