"""EDA page speed: first render in a fresh process, a warm rerun, and widget changes (AppTest timings).

Targets: first render ≤ 3 s once the caches are warm (statistics are computed once per process, PCA and
t-SNE once per machine), widget changes ≤ 1 s. Run: python -m bench.eda_speed
"""

from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest

from app.navigation import PAGES_DIR


def timed(label: str, action) -> float:
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    print(f"{label:<58} {seconds:6.2f} s")
    return seconds


def main() -> None:
    at = AppTest.from_file(str(PAGES_DIR / "eda.py"), default_timeout=600)
    timed("first render, this process (stats, PCA, input pipelines)", at.run)
    timed("rerun with warm caches", at.run)
    fresh = AppTest.from_file(str(PAGES_DIR / "eda.py"), default_timeout=600)
    timed("first render of a new session, warm caches", fresh.run)
    fresh.slider(key="eda_per_class").set_value(3)
    timed("widget change: images per class", fresh.run)
    fresh.multiselect(key="hist_classes").set_value(["all classes", "Coat"])
    timed("widget change: histogram classes", fresh.run)
    fresh.selectbox(key="diff_a").set_value("Coat")
    timed("widget change: difference view class", fresh.run)
    fresh.toggle(key="pca_all").set_value(True)
    timed("widget change: show all 60,000 PCA points", fresh.run)


if __name__ == "__main__":
    main()
