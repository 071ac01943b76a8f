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


# ------------------------------------------------------------------------------------------- writing

STOP_FILE = "STOP"
PROGRESS_FILE = "progress.json"
BACKUP_DIR = "backup"
STATES = ("queued", "running", "completed", "failed", "stopped")


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write atomically: readers (the live page) never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    tmp.replace(path)


def new_run_id(model: str, tag: str = "") -> str:
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    return "-".join(part for part in (stamp, model, tag) if part)


def create_run(config_dict: dict[str, Any], run_id: str, runs_root: Path | None = None) -> Path:
    """Make a new run folder holding the config and status 'queued'; the id gets a suffix if taken."""
    root = runs_root or config.runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    folder, n = root / run_id, 1
    while True:
        try:
            folder.mkdir()
            break
        except FileExistsError:
            n += 1
            folder = root / f"{run_id}-{n}"
    write_json(folder / CONFIG_FILE, config_dict)
    set_status(folder, "queued")
    return folder


def read_status(folder: Path) -> dict[str, Any]:
    return read_json(folder / STATUS_FILE) or {"state": "unknown"}


def set_status(folder: Path, state: str, **fields: Any) -> dict[str, Any]:
    """Update the run's status, keeping earlier fields (start time, pid …) unless overwritten."""
    import time

    if state not in STATES:
        raise ValueError(f"unknown run state '{state}'")
    status = read_json(folder / STATUS_FILE) or {}
    status.update(fields, state=state, updated=time.time())
    write_json(folder / STATUS_FILE, status)
    return status


def append_metrics(folder: Path, row: dict[str, Any]) -> None:
    with (folder / METRICS_FILE).open("a") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """The per-epoch rows written so far (a partly written last line is skipped)."""
    path = folder / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def keep_metrics_before(folder: Path, stage: int, epoch: int) -> None:
    """Drop rows of ``stage`` from ``epoch`` on (a resumed run writes them again)."""
    rows = [r for r in read_metrics(folder) if not (r.get("stage") == stage and r.get("epoch", 0) >= epoch)]
    tmp = folder / f".{METRICS_FILE}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(folder / METRICS_FILE)


def request_stop(folder: Path) -> None:
    """Ask a running training to stop after the current batch (it saves the model, status 'stopped')."""
    (folder / STOP_FILE).touch()


def stop_requested(folder: Path) -> bool:
    return (folder / STOP_FILE).exists()


def resolve_run(name_or_path: str, runs_root: Path | None = None) -> Path:
    """A run folder from its id, its path, or a shipped model's name."""
    for candidate in (
        Path(name_or_path),
        (runs_root or config.runs_dir()) / name_or_path,
        config.CACHED_MODELS_DIR / name_or_path,
    ):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"no run named '{name_or_path}' (see `python -m fashion_lib runs`)")


# ------------------------------------------------------------------------------------ live progress


@dataclass(frozen=True)
class Progress:
    """How far a run is, for a progress bar: a fraction, an ETA in seconds (None when unknown), a phrase."""

    fraction: float
    eta_seconds: float | None
    text: str


def progress_summary(folder: Path) -> Progress:
    """Read ``progress.json`` and the metrics so far and turn them into a fraction and an ETA."""
    import time

    p = read_json(folder / PROGRESS_FILE) or {}
    phase = p.get("phase", "starting")
    if phase == "done":
        return Progress(1.0, 0.0, "done")
    if phase != "training":
        batch, batches = p.get("batch"), p.get("batches")
        if batch and batches:
            started = p.get("phase_started")
            rate = batch / (time.time() - started) if started and time.time() > started else None
            eta = (batches - batch) / rate if rate else None
            return Progress(batch / batches, eta, f"{phase}: {batch:,} / {batches:,}")
        return Progress(0.0, None, phase)
    epoch, epochs = int(p.get("epoch", 1)), int(p.get("epochs", 1))
    batch, batches = int(p.get("batch", 0)), max(1, int(p.get("batches", 1)))
    stage_rows = [r for r in read_metrics(folder) if r.get("stage") == p.get("stage")]
    epoch_seconds = (
        sum(r["seconds"] for r in stage_rows) / len(stage_rows)
        if stage_rows
        else (p.get("epoch_elapsed", 0.0) / batch * batches if batch else None)
    )
    within = batch / batches
    fraction = min(1.0, (epoch - 1 + within) / epochs)
    eta = (epochs - epoch + 1 - within) * epoch_seconds if epoch_seconds else None
    stage = "fine-tuning" if p.get("stage") == 2 else "training"
    return Progress(fraction, eta, f"{stage}: epoch {epoch} of {epochs}, batch {batch} of {batches}")


def delete_run(folder: Path, runs_root: Path | None = None) -> None:
    """Delete a user's run folder (never a shipped model, never outside the runs folder)."""
    import shutil

    root = (runs_root or config.runs_dir()).resolve()
    folder = folder.resolve()
    if folder.parent != root:
        raise ValueError(f"{folder} is not a run folder under {root}; shipped models cannot be deleted here")
    shutil.rmtree(folder)


# ------------------------------------------------------------------------------------------ comparison


def comparable_runs() -> list[RunInfo]:
    """Runs with a summary (completed or stopped), newest first, then the shipped models."""
    return [r for r in list_runs() if (r.folder / SUMMARY_FILE).is_file()]


def default_comparison(candidates: list[RunInfo]) -> list[RunInfo]:
    """The newest run of each model family; a family with no run of the user's falls back to a shipped one."""
    chosen: dict[str, RunInfo] = {}
    for info in candidates:  # user runs come first, newest first
        if info.model not in chosen and info.state == "completed":
            chosen[info.model] = info
    return list(chosen.values())


def comparison_table(infos: list[RunInfo]) -> list[dict[str, Any]]:
    """One row per run: what it is, what it cost and how well it does, read from its summary."""
    rows = []
    for info in infos:
        s = read_json(info.folder / SUMMARY_FILE) or {}
        params = s.get("parameters", {})
        final = params.get("stage2") or params.get("stage1") or {}
        rows.append(
            {
                "run": info.run_id,
                "model": s.get("display_name", info.model),
                "weights": s.get("weights"),
                "input size": s.get("input_size"),
                "training images": s.get("training_images"),
                "parameters": final.get("total"),
                "trainable (stage 1)": params.get("stage1", {}).get("trainable"),
                "trainable (fine-tuning)": params.get("stage2", {}).get("trainable"),
                "feature extraction s": s.get("feature_extraction_seconds"),
                "stage 1 s": s.get("stage1_seconds"),
                "stage 2 s": s.get("stage2_seconds"),
                "wall time s": s.get("wall_seconds"),
                "epochs": s.get("epochs_run"),
                "test accuracy": s.get("test_accuracy"),
                "macro-F1": s.get("macro_f1"),
                "latency ms/image": s.get("latency_ms_per_image_batched"),
                "size MB": s["model_size_bytes"] / 1e6 if "model_size_bytes" in s else None,
            }
        )
    return rows


def per_class_f1(infos: list[RunInfo]) -> list[dict[str, Any]]:
    rows = []
    for info in infos:
        s = read_json(info.folder / SUMMARY_FILE) or {}
        for name, value in s.get("per_class_f1", {}).items():
            rows.append({"run": info.run_id, "class": name, "F1": value})
    return rows
