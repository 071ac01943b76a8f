"""Serialization and model cards: ship a finished run into ``cached_models/`` with its card, and export a
run or shipped model as a ``.keras`` file and a TensorFlow SavedModel that TF Serving loads as it is.

An export folder holds ``model.keras``, ``savedmodel/<version>/`` (the layout TF Serving expects under a
model's base path), ``card.json`` and ``README.md``. Every format is loaded back and checked against the
original model's probabilities before the export counts as done.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fashion_lib import confidence, config, data, evaluate, files, lifecycle, models, runs, wording

SHIPPED_FILES = (
    runs.CONFIG_FILE,
    runs.METRICS_FILE,
    runs.MODEL_FILE,
    runs.PREDICTIONS_FILE,
    runs.SUMMARY_FILE,
)
COMMAND_FILE = "command.txt"
SHIPPED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a plain folder name in cached_models/


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
        "training_photos": summary.get("training_photos", 0),
        "test_images": summary["test_images"],
        "test_accuracy": summary["test_accuracy"],
        "macro_f1": summary["macro_f1"],
        "per_class_f1": summary["per_class_f1"],
        "wall_seconds": summary["wall_seconds"],
        "cpu_seconds": summary.get("cpu_seconds"),
        "cpu_count": os.cpu_count(),
        "stage_seconds": runs.stage_seconds(summary, cfg),
        "features_extracted": summary.get("features_extracted"),
        "parameters": summary["parameters"],
        "model_size_bytes": summary["model_size_bytes"],
        "library_versions": summary["library_versions"],
        "calibration": evaluate.temperature_sentence(summary),
        **(
            {
                "teachers": summary["teachers"],
                "distill_weight": summary.get("distill_weight"),
                "cpu_seconds_with_teachers": summary.get("cpu_seconds_with_teachers"),
            }
            if summary.get("teachers")
            else {}
        ),
    }


def teachers_line(card: dict[str, Any]) -> str | None:
    """'Learned from …': the teachers as they were when they taught, and the CPU time of all the training
    that went into the model (theirs included)."""
    teachers = [t if isinstance(t, dict) else {"run_id": str(t)} for t in card.get("teachers") or []]
    if not teachers:
        return None
    named = ", ".join(
        f"`{t.get('run_id')}`"
        + (
            f" ({wording.percent(t['test_accuracy'])} test accuracy)"
            if isinstance(t.get("test_accuracy"), float)
            else ""
        )
        for t in teachers
    )
    weight = card.get("distill_weight")
    share = (
        "every target the teachers' softened answer"
        if weight == 1
        else f"each target {weight} the teachers' softened answer and the rest its label"
    )
    line = f"Learned from {len(teachers)} teacher run{'s' if len(teachers) > 1 else ''} ({share}): {named}"
    if total := card.get("cpu_seconds_with_teachers"):
        line += f"; with the teachers' own training, {total / 60:.0f} CPU-minutes in all"
    return line


def stage_times_line(card: dict[str, Any]) -> str | None:
    """'Time by stage: …' — and when the frozen backbone's features all came from the feature cache, that
    extracting them (which a first run on a machine does) is not in the total."""
    times = card.get("stage_seconds") or {}
    if not times:
        return None
    line = "Time by stage: " + ", ".join(f"{runs.STAGE_TIMES[k]} {v:.0f} s" for k, v in times.items())
    if card.get("features_extracted") == 0:
        line += (
            " (the backbone features were all in the feature cache, computed by an earlier run with the same "
            "backbone and input size: a first run on a machine also extracts them)"
        )
    return line


def card_markdown(card: dict[str, Any], kind: str = "shipped model") -> str:
    """The card as Markdown (a shipped model's README); ``kind`` names what the document describes."""
    lines = [
        f"# {card['name']} — {kind} `{card['run_id']}`",
        "",
        f"- Test accuracy: **{wording.percent(card['test_accuracy'])}** on {card['test_images']:,} test "
        f"images; macro-F1 {card['macro_f1']:.4f}",
        f"- Trained on {card['training_images']:,} images"
        + (
            f" and {photos:,} of them again as converted product photos"
            if (photos := card.get("training_photos"))
            else ""
        )
        + f"; run time {card['wall_seconds']:,.0f} s"
        + (
            f" ({card['cpu_seconds'] / 60:.0f} CPU-minutes on a {card.get('cpu_count') or '?'}-core machine)"
            if card.get("cpu_seconds")
            else ""
        )
        + f"; weights: {card['weights']}",
        *([f"- {line}"] if (line := stage_times_line(card)) else []),
        *([f"- {line}"] if (line := teachers_line(card)) else []),
        f"- Parameters: {card['parameters']['stage1']['total']:,}; "
        f"file size {card['model_size_bytes']:,} bytes ({card['model_size_bytes'] / 1e6:.1f} MB)",
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

    Where Fashion-MNIST is found, the model's familiarity statistics (``confidence``) ship beside it, so
    its first photo on the Grad-CAM page or the service's start does not wait for them.

    The new folder is built beside the target under a temporary name and swapped in only when complete, so
    a failure (disk full, a bad run) leaves the model that was shipped before untouched."""
    if not SHIPPED_NAME.fullmatch(name):
        raise ValueError(
            f"'{name}' cannot name a shipped model: use letters, digits, '.', '_' and '-', starting with a "
            "letter or digit (it becomes a folder in cached_models/)"
        )
    card = model_card(folder)
    target = (target_root or config.CACHED_MODELS_DIR) / name
    with files.new_folder(target) as staging:
        for file_name in SHIPPED_FILES:
            if file_name != runs.MODEL_FILE:
                shutil.copy2(folder / file_name, staging / file_name)
        model = _load(folder)
        model.save(staging / runs.MODEL_FILE)
        _familiarity_beside(model, folder, staging / runs.MODEL_FILE)
        card["model_size_bytes"] = (staging / runs.MODEL_FILE).stat().st_size
        summary = runs.read_json(staging / runs.SUMMARY_FILE)
        runs.write_json(
            staging / runs.SUMMARY_FILE, {**summary, "model_size_bytes": card["model_size_bytes"]}
        )
        runs.write_json(staging / runs.CARD_FILE, card)
        (staging / "README.md").write_text(card_markdown(card))
    return target


def _load(folder: Path):
    """The folder's model; ExportError naming the file when it cannot be loaded."""
    try:
        return models.load_model(folder / runs.MODEL_FILE)
    except Exception as exc:  # a damaged file that is still a zip: KeyError, BadZipFile, Keras's own errors
        raise ExportError(
            f"{folder.name}'s {runs.MODEL_FILE} cannot be loaded ({type(exc).__name__}: {exc})"
        ) from None


def _familiarity_beside(model, source: Path, written: Path) -> bool:
    """Write the familiarity statistics of ``source``'s model (``model``, loaded) beside ``written``, a copy
    with the same weights (shipped or exported). Known ones are reused; else they are made where
    Fashion-MNIST is (with the validation split from ``source``'s config) and left out where it is not
    (False; a file left there by an earlier export is removed)."""
    target = written.parent / confidence.FAMILIARITY_FILE
    stats = confidence.of_model(model, source / runs.MODEL_FILE)
    if stats is None:
        target.unlink(missing_ok=True)
        return False
    confidence.save(stats, target, confidence.digest(written))
    return True


# ------------------------------------------------------------------------------------------------ export

KERAS = "keras"
SAVEDMODEL = "savedmodel"
EXPORT_FORMATS: tuple[str, ...] = (KERAS, SAVEDMODEL)
FORMAT_LABELS = {KERAS: "Keras (.keras)", SAVEDMODEL: "TensorFlow SavedModel (TF Serving)"}
SAVEDMODEL_DIR = "savedmodel"  # TF Serving's model base path; versions are numbered folders below it
SAVEDMODEL_VERSION = 1
SIGNATURE = "serving_default"
SIGNATURE_INPUT = "pixels"
SIGNATURE_OUTPUT = "probabilities"
CARD_MARKDOWN = "README.md"
ROUND_TRIP_TOLERANCE = 1e-5  # largest allowed difference between reloaded and original probabilities
CHECK_IMAGES = 256  # test images each format is checked on

INPUT_CONTRACT: dict[str, Any] = {
    "shape": [None, config.IMAGE_SIZE, config.IMAGE_SIZE, 1],
    "dtype": "float32",
    "range": [0, 255],
    "meaning": "raw Fashion-MNIST pixels: a light garment on a black background, not normalised; "
    "every preprocessing step is inside the model",
    "output": f"class probabilities, shape [None, {config.NUM_CLASSES}], in the order of class_names",
    "savedmodel_signature": {"name": SIGNATURE, "input": SIGNATURE_INPUT, "output": SIGNATURE_OUTPUT},
}


class ExportError(ValueError):
    """An export that cannot be made or did not survive its round-trip check; the message says which."""


def read_card(folder: Path) -> dict[str, Any]:
    """The card of a run, a shipped model or an export folder: what the model is and how well it does,
    with the class names, the input contract and its temperature (None when it was not scaled)."""
    card = runs.read_json(folder / runs.CARD_FILE)
    if not isinstance(card, dict) or not card:
        card = model_card(folder)
    if not (isinstance(card.get("name"), str) and isinstance(card.get("run_id"), str)):
        # an export served with {"name": 5} answered /health "ready", then 500 on every request
        raise ValueError(f"{folder / runs.CARD_FILE} is damaged: its name and run_id must be text")
    summary = runs.read_json(folder / runs.SUMMARY_FILE) or {}
    return {
        **card,
        "temperature": card.get("temperature", summary.get("temperature")),
        "class_names": list(config.CLASS_NAMES),
        "input_contract": INPUT_CONTRACT,
    }


def resolve_model(name_or_path: str) -> Path:
    """The folder of a run (id or path), a shipped model (name) or an export folder (path) holding
    ``model.keras`` and a card; raises FileNotFoundError naming what was looked for."""
    try:
        folder = runs.resolve_run(name_or_path)
    except FileNotFoundError:
        folder = Path(name_or_path)
        if not (folder / runs.CARD_FILE).is_file():
            raise
    if not (folder / runs.MODEL_FILE).is_file():
        raise FileNotFoundError(f"'{name_or_path}' has no {runs.MODEL_FILE}: it has not finished training")
    return folder


@dataclass(frozen=True)
class RoundTrip:
    """One format loaded back: the largest difference from the original model's probabilities."""

    format: str
    path: Path
    max_difference: float
    images: int


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    card: dict[str, Any]
    checks: tuple[RoundTrip, ...]
    checked_on: str  # which images the round trips used


def exportable(infos: list[runs.RunInfo]) -> list[runs.RunInfo]:
    """The runs among ``infos`` that can be exported: completed runs and shipped models."""
    return [info for info in infos if info.state == "completed"]


def parse_formats(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Formats from "keras,savedmodel" or a list, in the canonical order; raises ExportError for others."""
    wanted = [f.strip().lower() for f in (value.split(",") if isinstance(value, str) else value) if f.strip()]
    unknown = sorted(set(wanted) - set(EXPORT_FORMATS))
    if unknown or not wanted:
        raise ExportError(
            f"unknown export format {', '.join(repr(f) for f in unknown) or '(none given)'}: "
            f"choose from {', '.join(EXPORT_FORMATS)}"
        )
    return tuple(f for f in EXPORT_FORMATS if f in wanted)


def check_images(n: int = CHECK_IMAGES) -> tuple[np.ndarray, str]:
    """Images (n, 28, 28, 1) float32 for the round-trip checks and where they came from: the first test
    images when the dataset is here, else seeded random pixels (the check then still compares formats)."""
    try:
        ds = data.load(allow_download=False)
        return ds.x_test[:n, ..., None].astype(np.float32), f"the first {n} test images"
    except data.FashionDataError:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (n, config.IMAGE_SIZE, config.IMAGE_SIZE, 1)).astype(np.float32)
        return images, f"{n} random images (Fashion-MNIST not found)"


def write_savedmodel(model, target: Path) -> None:
    """A SavedModel whose ``serving_default`` signature takes ``pixels`` (N, 28, 28, 1) float32 0–255 and
    returns ``probabilities`` (N, 10): what TF Serving's REST and gRPC APIs call."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",  # ExportArchive makes the endpoint named "serve" the serving_default signature
        fn=lambda pixels: {SIGNATURE_OUTPUT: model(pixels, training=False)},
        input_signature=[tf.TensorSpec(INPUT_CONTRACT["shape"], tf.float32, name=SIGNATURE_INPUT)],
    )
    archive.write_out(str(target), verbose=False)


def savedmodel_probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    """Call a SavedModel through its serving signature, as TF Serving does."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    return serve(**{SIGNATURE_INPUT: tf.constant(images, tf.float32)})[SIGNATURE_OUTPUT].numpy()


def _check(fmt: str, path: Path, reloaded: np.ndarray, original: np.ndarray) -> RoundTrip:
    difference = float(np.abs(reloaded - original).max())
    if not difference <= ROUND_TRIP_TOLERANCE:  # also catches NaN
        raise ExportError(
            f"the {fmt} export's probabilities differ from the original model's by {difference:.2e} "
            f"(allowed {ROUND_TRIP_TOLERANCE:.0e}): the export is not faithful, so it was not written"
        )
    return RoundTrip(fmt, path, difference, len(original))


def export_model(
    folder: Path,
    target: Path,
    formats: tuple[str, ...] = EXPORT_FORMATS,
    images: np.ndarray | None = None,
    version: int = SAVEDMODEL_VERSION,
) -> ExportResult:
    """Export a completed run or shipped model (``folder``) into ``target``: ``model.keras`` (no optimizer
    state, loads with ``safe_mode=True``) with its familiarity statistics (``confidence``; where they are
    known or Fashion-MNIST is here), ``savedmodel/<version>/``, ``card.json`` and ``README.md``.

    Each format is loaded back and its probabilities on ``images`` (N, 28, 28, 1) raw pixels, default
    :func:`check_images`, compared with the original's; ExportError when they differ by more than 1e-5."""
    formats = parse_formats(formats)
    if version < 1:
        raise ExportError(f"the SavedModel version must be a positive integer, got {version}")
    _check_target(target, version if SAVEDMODEL in formats else None)  # at once: before minutes of work
    card = read_card(folder)
    source = _load(folder)
    if images is None:
        images, checked_on = check_images()
    else:
        checked_on = f"{len(images)} given images"
    images = np.asarray(images, np.float32)
    original = source.predict(images, batch_size=CHECK_IMAGES, verbose=0)
    checks = []
    familiar = False  # the statistics go with model.keras, which the service loads
    # Everything is written and checked beside the target first: a failure leaves the target as it was
    staging = files.staging_beside(target)
    try:
        if KERAS in formats:
            path = staging / runs.MODEL_FILE
            source.save(path)
            reloaded = models.load_model(path).predict(images, batch_size=CHECK_IMAGES, verbose=0)
            checks.append(_check(KERAS, path, reloaded, original))
            familiar = _familiarity_beside(source, folder, path)  # the service's "not sure" rule anywhere
        if SAVEDMODEL in formats:
            path = staging / SAVEDMODEL_DIR / str(version)
            try:
                write_savedmodel(source, path)
            except Exception as exc:  # TensorFlow's own errors too (a full disk: ResourceExhaustedError)
                raise ExportError(f"the SavedModel could not be written ({type(exc).__name__})") from exc
            checks.append(_check(SAVEDMODEL, path, savedmodel_probabilities(path, images), original))
        round_trip = {c.format: {"max_difference": c.max_difference, "images": c.images} for c in checks}
        card["export"] = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "formats": list(formats),
            "savedmodel_version": version if SAVEDMODEL in formats else None,
            "round_trip": round_trip,
            "checked_on": checked_on,
            "familiarity_statistics": confidence.FAMILIARITY_FILE if familiar else None,
            "library_versions": _library_versions(),
        }
        runs.write_json(staging / runs.CARD_FILE, card)
        (staging / CARD_MARKDOWN).write_text(export_markdown(card))
        # two exports into one folder take turns here, each checking the target as it is now
        with files.locked(files.lock_beside(target), remove=True):
            _check_target(target, version if SAVEDMODEL in formats else None)
            _move_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    moved = tuple(replace(c, path=target / c.path.relative_to(staging)) for c in checks)
    return ExportResult(target, card, moved, checked_on)


EXPORT_FILES = (runs.MODEL_FILE, confidence.FAMILIARITY_FILE, CARD_MARKDOWN, runs.CARD_FILE)  # card last


def _check_target(target: Path, version: int | None) -> None:
    """Refuse a target the export would overwrite something of the user's in: a file, or a folder that
    holds anything but an earlier export's files (its SavedModel versions are TF Serving's to keep). A
    SavedModel version lower than one already there is refused too: TF Serving serves the highest."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ExportError(f"{target} is a file: export into a new or empty folder")
    present = {p.name for p in target.iterdir()}
    if not present:
        return
    card = runs.read_json(target / runs.CARD_FILE)
    foreign = sorted(present - {*EXPORT_FILES, SAVEDMODEL_DIR})
    if not (isinstance(card, dict) and "export" in card) or foreign:
        what = f"holds {', '.join(foreign[:3])}" if foreign else "holds no earlier export (no card.json)"
        raise ExportError(
            f"{target} is not empty and {what}: export into a new or empty folder, or an earlier export "
            "holding only its own files, so nothing of yours is overwritten"
        )
    versions = [int(p.name) for p in (target / SAVEDMODEL_DIR).glob("*") if p.name.isdigit()]
    if version is not None and versions and max(versions) > version:
        raise ExportError(
            f"{target / SAVEDMODEL_DIR} already holds version {max(versions)}, which TF Serving would go on "
            f"serving instead of version {version}: choose --savedmodel-version {max(versions) + 1}"
        )


def _move_in(staging: Path, target: Path) -> None:
    """Move the checked export from ``staging`` into ``target``: a new or empty target becomes it whole;
    into an earlier export it goes file by file, each replaced at once, and the earlier export's files
    this one does not have are removed (a SavedModel-only export left the earlier model.keras, which the
    service then served under the new card). ``savedmodel/`` stays the same folder with its other
    versions, so a TF Serving container that mounts it sees the new version appear."""
    if not target.exists() or not any(target.iterdir()):
        with contextlib.suppress(FileNotFoundError):
            target.rmdir()
        staging.rename(target)
        return
    new_versions = staging / SAVEDMODEL_DIR
    if new_versions.is_dir():
        (target / SAVEDMODEL_DIR).mkdir(exist_ok=True)
        for version in new_versions.iterdir():
            placed = target / SAVEDMODEL_DIR / version.name
            files.restore_interrupted(placed)  # an export killed below left it aside
            if placed.exists():  # the same version again: the old one aside, the new in, the old away
                aside = Path(tempfile.mkdtemp(prefix=f".{version.name}.old-", dir=placed.parent))
                placed.rename(aside)
                version.rename(placed)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                version.rename(placed)
    for name in EXPORT_FILES:  # the card last: it describes what is there
        if (staging / name).exists():
            os.replace(staging / name, target / name)
        else:
            (target / name).unlink(missing_ok=True)


def _library_versions() -> dict[str, str]:
    from fashion_lib.training.engine import library_versions  # what a run records; the same for an export

    return library_versions()


def export_markdown(card: dict[str, Any]) -> str:
    """An export's README: the model card, then what the files are and how to call them."""
    info = card["export"]
    contract = card["input_contract"]
    lines = [
        card_markdown(card, kind="export of"),
        "## Input and output",
        "",
        f"- Input: `{contract['dtype']}` array of shape `{contract['shape']}`, values "
        f"{contract['range'][0]}–{contract['range'][1]}: {contract['meaning']}.",
        f"- Output: {contract['output']}.",
        f"- Classes: {', '.join(f'{i} {name}' for i, name in enumerate(card['class_names']))}.",
        "",
        "## Files",
        "",
    ]
    if KERAS in info["formats"]:
        lines.append(
            f"- `{runs.MODEL_FILE}`: `keras.saving.load_model(path, safe_mode=True)` "
            f"(largest difference from the original: {info['round_trip'][KERAS]['max_difference']:.1e})."
        )
    if info.get("familiarity_statistics"):
        lines.append(
            f"- `{info['familiarity_statistics']}`: where the model's training images lie in its feature "
            'space, for the service\'s "not sure" rule (`python -m fashion_lib serve --model DIR`).'
        )
    if SAVEDMODEL in info["formats"]:
        sig = contract["savedmodel_signature"]
        lines.append(
            f"- `{SAVEDMODEL_DIR}/{info['savedmodel_version']}/`: TensorFlow SavedModel, signature "
            f"`{sig['name']}` (input `{sig['input']}`, output `{sig['output']}`); TF Serving: "
            f"`docker run -p 8501:8501 -v $PWD/{SAVEDMODEL_DIR}:/models/fashion -e MODEL_NAME=fashion "
            "tensorflow/serving` (largest difference from the original: "
            f"{info['round_trip'][SAVEDMODEL]['max_difference']:.1e})."
        )
    lines += [
        f"- Checked on {info['checked_on']}; exported {info['date']} with "
        f"{', '.join(f'{k} {v}' for k, v in info['library_versions'].items())}.",
    ]
    return "\n".join(lines) + "\n"


def export_zip(
    folder: Path, formats: tuple[str, ...] = EXPORT_FORMATS, images: np.ndarray | None = None
) -> bytes:
    """The export of ``folder`` (see :func:`export_model`) as the bytes of a zip file whose entries sit in
    one folder named after the run, for a download button."""
    with tempfile.TemporaryDirectory(prefix="fashion_export_") as tmp:
        result = export_model(folder, Path(tmp) / folder.name, formats, images)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(result.folder.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(result.folder.parent))
    return buffer.getvalue()


def zip_name(folder: Path) -> str:
    """The download's file name."""
    return f"{folder.name}-export.zip"
