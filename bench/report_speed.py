"""How long the technical report takes: building it from saved artifacts, and writing HTML and Markdown.
Goal (issue #15): seconds, not minutes — it reads predictions and metrics, it never retrains.

    python -m bench.report_speed [--runs A,B] [--study NAME]
"""

from __future__ import annotations

import argparse
import time

from fashion_lib import data, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--runs", help="run ids or shipped names (default: shipped + the best of each family)"
    )
    parser.add_argument("--study")
    args = parser.parse_args()
    started = time.perf_counter()
    ds = data.load()
    loaded = time.perf_counter()
    names = [n for n in (args.runs or "").split(",") if n]
    infos = report.resolve_runs(names) if names else report.default_runs()
    built = report.build(infos, args.study, ds)
    html_started = time.perf_counter()
    html_text = report.to_html(built)
    md_started = time.perf_counter()
    zipped = report.markdown_zip(built, html_text)
    done = time.perf_counter()
    print(f"runs: {', '.join(built.runs)}; study: {args.study or 'none'}")
    print(f"data load + verify        {loaded - started:6.1f} s")
    print(f"build (all sections)      {built.seconds:6.1f} s")
    print(f"HTML ({len(html_text) / 1e6:.1f} MB)            {md_started - html_started:6.1f} s")
    markdown = f"Markdown zip ({len(zipped) / 1e6:.1f} MB)"
    print(f"{markdown:<26}{done - md_started:6.1f} s  (chart pictures by Kaleido)")
    print(f"total                     {done - started:6.1f} s")


if __name__ == "__main__":
    main()
