"""Serialization and model cards: ship a finished run into ``cached_models/`` with its card."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fashion_lib import config, evaluate, lifecycle, models, runs

SHIPPED_FILES = (
    runs.CONFIG_FILE,
    runs.METRICS_FILE,
    runs.MODEL_FILE,
    runs.PREDICTIONS_FILE,
    runs.SUMMARY_FILE,
)
COMMAND_FILE = "command.txt"


def model_card(folder: Path) -> dict[str, Any]:
    """The card of a finished run: what it is, how it was made, how well it does (all read from the run)."""
    summary = runs.read_json(folder / runs.SUMMARY_FILE)
    cfg = runs.read_json(folder / runs.CONFIG_FILE)
    if summary is None or cfg is None or lifecycle.effective_state(folder) != lifecycle.COMPLETED:
        raise ValueError(f"{folder} is not a completed run (no summary, or status is not 'completed')")
    command = (folder / COMMAND_FILE).read_text().strip() if (folder / COMMAND_FILE).is_file() else None
    return {
        "name": models.DISPLAY_NAMES[cfg["model"]],
        "run_id": folder.name,
        "config": cfg,
        "command": command,
        "weights": summary["weights"],
        "data_fingerprint": summary["data_fingerprint"],
        "split_checksum": summary["split_checksum"],
        "training_images": summary["training_images"],
        "test_images": summary["test_images"],
        "test_accuracy": summary["test_accuracy"],
        "macro_f1": summary["macro_f1"],
        "per_class_f1": summary["per_class_f1"],
        "wall_seconds": summary["wall_seconds"],
        "parameters": summary["parameters"],
        "model_size_bytes": summary["model_size_bytes"],
        "library_versions": summary["library_versions"],
        "calibration": evaluate.temperature_sentence(summary),
    }


def card_markdown(card: dict[str, Any]) -> str:
    lines = [
        f"# {card['name']} — shipped model `{card['run_id']}`",
        "",
        f"- Test accuracy: **{card['test_accuracy']:.2%}** on {card['test_images']:,} test images; "
        f"macro-F1 {card['macro_f1']:.4f}",
        f"- Trained on {card['training_images']:,} images in {card['wall_seconds']:.0f} s; "
        f"weights: {card['weights']}",
        f"- Parameters: {card['parameters']['stage1']['total']:,}; "
        f"file size {card['model_size_bytes']:,} bytes",
        f"- Data fingerprint {card['data_fingerprint']}, split checksum {card['split_checksum']}",
        *([f"- {card['calibration']}"] if card.get("calibration") else []),
        f"- Libraries: {', '.join(f'{k} {v}' for k, v in card['library_versions'].items())}",
        "",
        "Reproduce with:",
        "",
        "```bash",
        card["command"] or "(trained through the library, not the command line)",
        "```",
        "",
        "| class | F1 |",
        "|---|---|",
        *(f"| {name} | {f1:.4f} |" for name, f1 in card["per_class_f1"].items()),
    ]
    return "\n".join(lines) + "\n"


def ship_run(folder: Path, name: str, target_root: Path | None = None) -> Path:
    """Copy a completed run into ``cached_models/<name>/`` with ``card.json`` and ``README.md``.

    The model is written again without its optimizer state (Adam keeps two numbers per weight): the shipped
    file is for predictions and is about a third of the run's; the card and summary give its size.

    The new folder is built beside the target under a temporary name and swapped in only when complete, so
    a failure (disk full, a bad run) leaves the model that was shipped before untouched."""
    card = model_card(folder)
    root = target_root or config.CACHED_MODELS_DIR
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.new-", dir=root))
    try:
        for file_name in SHIPPED_FILES:
            if file_name != runs.MODEL_FILE:
                shutil.copy2(folder / file_name, staging / file_name)
        models.load_model(folder / runs.MODEL_FILE).save(staging / runs.MODEL_FILE)
        card["model_size_bytes"] = (staging / runs.MODEL_FILE).stat().st_size
        summary = runs.read_json(staging / runs.SUMMARY_FILE)
        runs.write_json(
            staging / runs.SUMMARY_FILE, {**summary, "model_size_bytes": card["model_size_bytes"]}
        )
        runs.write_json(staging / runs.CARD_FILE, card)
        (staging / "README.md").write_text(card_markdown(card))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = None
    if target.exists():
        previous = root / f".{name}.old-{os.getpid()}"
        target.rename(previous)
    try:
        staging.rename(target)
    except OSError:
        if previous is not None:
            previous.rename(target)  # put the old one back
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
    return target
