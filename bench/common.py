"""Shared by the benchmarks: train a config through the engine and print a run's figures."""

from __future__ import annotations

import resource
from pathlib import Path

from fashion_lib import runs, train


def peak_memory_mb() -> float:
    """This process's resident-memory high-water mark. VmHWM, not getrusage's ru_maxrss:
    Linux carries ru_maxrss over fork and exec, so a child of a large process would report
    its parent's size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of this process (user + system, all threads): unlike wall time, other work on the machine
    does not inflate it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train_and_report(cfg: train.TrainConfig, label: str) -> dict:
    before = cpu_seconds()
    folder = train.train(cfg)
    summary = runs.read_json(folder / runs.SUMMARY_FILE) or {}
    summary["cpu_seconds"] = cpu_seconds() - before
    print_summary(label, folder, summary)
    return summary


def print_summary(label: str, folder: Path, summary: dict) -> None:
    epochs = runs.read_metrics(folder)
    per_epoch = [round(row["seconds"], 1) for row in epochs]
    timings = {k: v for k, v in summary.items() if k.endswith("_seconds")}
    print(f"\n== {label}")
    print(f"   run folder:     {folder}")
    print(
        f"   weights:        {summary.get('weights')}; input {summary.get('input_size')} px; "
        f"{summary.get('training_images')} training images"
    )
    print(
        f"   test accuracy:  {summary.get('test_accuracy', float('nan')):.4f}   "
        f"macro-F1 {summary.get('macro_f1', float('nan')):.4f}"
    )
    print(f"   times (s):      {timings}")
    if "cpu_seconds" in summary:
        print(f"   CPU time:       {summary['cpu_seconds']:.0f} s (all threads, this process)")
    print(f"   epoch times (s): {per_epoch}")
    print(f"   parameters:     {summary.get('parameters')}")
