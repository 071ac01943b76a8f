"""Shared by the benchmarks: train a config through the engine and print a run's figures."""

from __future__ import annotations

from pathlib import Path

from fashion_lib import runs, train


def train_and_report(cfg: train.TrainConfig, label: str) -> dict:
    folder = train.train(cfg)
    summary = runs.read_json(folder / runs.SUMMARY_FILE) or {}
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
    print(f"   epoch times (s): {per_epoch}")
    print(f"   parameters:     {summary.get('parameters')}")
