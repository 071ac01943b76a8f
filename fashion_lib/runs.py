"""Run registry on disk: every training run is one folder under ``$FASHION_HOME/runs``.

A run folder holds ``config.json``, ``status.json``, ``metrics.jsonl`` (one line per epoch), the model
(``model.keras``), test-set predictions (``predictions.npz``) and ``summary.json``. Shipped models in
``cached_models/`` use the same layout (with ``card.json`` standing in for the summary) and are read-only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashion_lib import config

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"
CARD_FILE = "card.json"
METRICS_FILE = "metrics.jsonl"
MODEL_FILE = "model.keras"
PREDICTIONS_FILE = "predictions.npz"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing or half-written."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class RunInfo:
    """What the run list shows about one run folder."""

    run_id: str
    folder: Path
    state: str
    model: str
    shipped: bool
    test_accuracy: float | None
    error: str | None

    @property
    def label(self) -> str:
        acc = f", test accuracy {self.test_accuracy:.2%}" if self.test_accuracy is not None else ""
        origin = "shipped" if self.shipped else self.state
        return f"{self.run_id} ({self.model}, {origin}{acc})"


def read_run(folder: Path, shipped: bool = False) -> RunInfo | None:
    """Summarise one run folder; None when it is not a run (no config)."""
    cfg = read_json(folder / CONFIG_FILE)
    if cfg is None:
        return None
    status = read_json(folder / STATUS_FILE) or {}
    summary = read_json(folder / (CARD_FILE if shipped else SUMMARY_FILE)) or {}
    accuracy = summary.get("test_accuracy")
    return RunInfo(
        run_id=folder.name,
        folder=folder,
        state="completed" if shipped else str(status.get("state", "unknown")),
        model=str(cfg.get("model", "?")),
        shipped=shipped,
        test_accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
        error=status.get("error"),
    )


def list_runs(runs_root: Path | None = None, include_shipped: bool = True) -> list[RunInfo]:
    """The user's runs (newest first), then the shipped models."""
    root = runs_root or config.runs_dir()
    found = []
    if root.is_dir():
        for folder in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True):
            info = read_run(folder)
            if info is not None:
                found.append(info)
    if include_shipped and config.CACHED_MODELS_DIR.is_dir():
        for folder in sorted(p for p in config.CACHED_MODELS_DIR.iterdir() if p.is_dir()):
            info = read_run(folder, shipped=True)
            if info is not None:
                found.append(info)
    return found
