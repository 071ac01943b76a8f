"""EDA page speed in a real browser: a warm load (the server's caches already filled) and widget changes,
timed in headless Chromium against a real `streamlit run` server, as a user feels them.

Targets (issue #16): warm load ≤ 2 s, a widget change ≤ 1 s on this machine. Run: python -m bench.eda_speed
(needs Debian's Chromium, as the browser tests do).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from tests.e2e.conftest import CHROMIUM
from tests.processes import start_app, stop

IDLE = "[data-testid=stApp][data-test-script-state=notRunning]"
REPEATS = 5


def settle(page, before: float) -> float:
    """Seconds from ``before`` until the script has run and the visible charts and pictures are drawn."""
    page.wait_for_timeout(100)  # the rerun starts after the browser sends the change
    page.wait_for_selector(IDLE, timeout=120_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('img')].every(i => i.complete)", timeout=60_000
    )
    return time.perf_counter() - before


def main() -> None:
    log = Path(tempfile.mkdtemp()) / "server.log"
    server, url = start_app(log)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            started = time.perf_counter()
            page.goto(f"{url}/eda")
            print(f"first load (fills this process's caches)          {settle(page, started):6.2f} s")
            loads = []
            for _ in range(REPEATS):
                fresh = browser.new_page(viewport={"width": 1400, "height": 1000})
                started = time.perf_counter()
                fresh.goto(f"{url}/eda")
                loads.append(settle(fresh, started))
                fresh.close()
            print(
                f"warm load, median of {REPEATS}                          {statistics.median(loads):6.2f} s"
                f"  (all: {', '.join(f'{x:.2f}' for x in loads)})"
            )
            switches = []
            for tab in ("Pixel intensity", "Embedding", "Samples"):  # Samples last: the widgets below
                started = time.perf_counter()
                page.get_by_role("tab", name=tab).click()
                switches.append(settle(page, started))
            print(
                f"tab switch (pixel intensity, embedding, samples) "
                f"{', '.join(f'{x:.2f}' for x in switches)} s"
            )
            changes = []
            for value in ("ArrowLeft", "ArrowRight") * 2:
                slider = page.get_by_role("slider").first
                slider.focus()
                started = time.perf_counter()
                slider.press(value)
                changes.append(settle(page, started))
            print(f"widget change (images per class), median          {statistics.median(changes):6.2f} s")
            page.get_by_role("tab", name="Class similarity").click()
            option = page.get_by_role("option", name="Coat", exact=True)
            for _ in range(5):  # the first click can land while the tab is still being laid out
                page.get_by_label("Class A").first.click()
                try:
                    option.wait_for(timeout=2_000)
                    break
                except PlaywrightTimeout:
                    continue
            started = time.perf_counter()  # from choosing the option (the dropdown is open)
            option.click()
            print(f"widget change (difference view class)             {settle(page, started):6.2f} s")
            browser.close()
    finally:
        stop(server)
    print(f"machine load average now: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
