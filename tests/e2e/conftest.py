"""Real-browser harness: a `streamlit run app/main.py` server on a free loopback port, driven by Playwright
in Debian's Chromium (Playwright cannot download its own browser here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from fashion_lib.config import REPO_ROOT
from tests.processes import free_port, stop

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = REPO_ROOT / "test-screenshots"  # pytest-playwright empties test-results/ at each start
STARTUP_TIMEOUT_S = 60


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


def wait_until_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"streamlit did not answer within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def app_url(tmp_path_factory) -> str:
    """Base URL of a real Streamlit server running the app, for the whole test session."""
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app/main.py",
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, log)
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
