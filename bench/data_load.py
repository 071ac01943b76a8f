"""Full-load time of Fashion-MNIST (find + verify + decode all four files).

Prints the time of a fresh process's first load (what the app pays once per process) and of repeated
loads in one process. Target: well under 2 s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from fashion_lib import data

ONE_LOAD = (
    "import time; t = time.perf_counter(); from fashion_lib import data; data.load(); "
    "print(time.perf_counter() - t)"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    fresh = [
        float(subprocess.check_output([sys.executable, "-c", ONE_LOAD], text=True))
        for _ in range(args.repeats)
    ]
    in_process = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        ds = data.load()
        in_process.append(time.perf_counter() - started)

    print(f"source: {ds.source.description} ({ds.source.folder}), verified={ds.source.verified}")
    print(f"fresh process, import + load: median {statistics.median(fresh):.3f} s, max {max(fresh):.3f} s")
    median, worst = statistics.median(in_process), max(in_process)
    print(f"same process, load:           median {median:.3f} s, max {worst:.3f} s")
    print(f"({args.repeats} repeats each; target: well under 2 s)")


if __name__ == "__main__":
    main()
