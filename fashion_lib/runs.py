"""Run registry on disk: every training run is one folder under ``$FASHION_HOME/runs``.

A run folder holds ``config.json``, ``status.json`` (see ``lifecycle``), ``metrics.jsonl`` (one line per
epoch), the model (``model.keras``), test-set predictions (``predictions.npz``) and ``summary.json``. Shipped
models in ``cached_models/`` use the same layout (with ``card.json`` beside the summary) and are read-only.

Every reader here validates what it reads (``schemas``): a damaged file becomes a *problem* listed with
the run, never an exception in a page, and the other runs keep working.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any

from fashion_lib import config, files, lifecycle, models, schemas, wording

CONFIG_FILE = "config.json"
STATUS_FILE = lifecycle.STATUS_FILE
SUMMARY_FILE = "summary.json"
CARD_FILE = "card.json"
METRICS_FILE = "metrics.jsonl"
MODEL_FILE = "model.keras"
PREDICTIONS_FILE = "predictions.npz"
PROGRESS_FILE = "progress.json"
BACKUP_DIR = "backup"
TRIAL_FILE = "trial.json"  # written by the tuner: which study and trial the run belongs to


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing, half-written or not an object."""
    value = files.read_json(path)
    return value if isinstance(value, dict) else None


write_json = files.write_json


# ------------------------------------------------------------------------------------------ metrics


def read_metrics_checked(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The valid per-epoch rows, and a problem for each line that is not one.

    A partly written last line (the process was writing it) is skipped without a problem."""
    try:
        raw = files.read_bytes(folder / METRICS_FILE)
    except FileNotFoundError:
        return [], []
    except OSError as exc:  # a folder or a pipe in its place, no permission
        return [], [f"{METRICS_FILE} cannot be read ({exc})"]
    lines = raw.split(b"\n")
    rows, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number == len(lines)  # no newline after it yet
        try:
            value = files.parse_json(line.decode("utf-8"))
        except UnicodeDecodeError:
            problems.append(f"{METRICS_FILE}: line {number} is not UTF-8 text")
            continue
        except ValueError:
            if not last:
                problems.append(f"{METRICS_FILE}: line {number} is not JSON")
            continue
        row, problem = schemas.check(schemas.MetricsRow, value, f"{METRICS_FILE} line {number}")
        if problem:
            problems.append(problem)
        else:
            rows.append(row.model_dump())
    return rows, problems


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """The valid per-epoch rows written so far."""
    return read_metrics_checked(folder)[0]


def append_metrics(folder: Path, row: dict[str, Any]) -> None:
    with (folder / METRICS_FILE).open("a") as f:
        f.write(json.dumps(row) + "\n")


def keep_metrics_before(folder: Path, stage: int, epoch: int) -> None:
    """Drop rows of ``stage`` from ``epoch`` on, and later stages (a resumed run writes them again)."""
    rows = [
        r for r in read_metrics(folder) if r["stage"] < stage or (r["stage"] == stage and r["epoch"] < epoch)
    ]
    files.write_text(folder / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in rows))


def read_summary(folder: Path) -> tuple[schemas.Summary | None, str | None]:
    """(the validated summary, None), (None, None) when there is none yet, or (None, what is wrong)."""
    path = folder / SUMMARY_FILE
    if not path.exists():
        return None, None
    return schemas.check(schemas.Summary, read_json(path), SUMMARY_FILE)


# --------------------------------------------------------------------------------------- run listing


@dataclass(frozen=True)
class RunInfo:
    """What the app knows about one run folder, every part validated."""

    run_id: str
    folder: Path
    state: str  # the effective state (lifecycle); shipped models are 'completed'
    model: str
    shipped: bool
    test_accuracy: float | None
    error: str | None
    problems: tuple[str, ...] = ()
    detail: str = ""  # why the state is what it is (e.g. the process that ended)
    summary: schemas.Summary | None = None
    config: dict[str, Any] | None = None
    trial: dict[str, Any] | None = None  # {"study": …, "number": …} for a tuning trial's run

    @property
    def damaged(self) -> bool:
        return bool(self.problems)

    @property
    def has_model(self) -> bool:
        return (self.folder / MODEL_FILE).is_file()

    @property
    def has_predictions(self) -> bool:
        return (self.folder / PREDICTIONS_FILE).is_file()

    @property
    def finished(self) -> bool:
        return self.state in (lifecycle.COMPLETED, lifecycle.STOPPED)

    @property
    def label(self) -> str:
        """A readable name: what it is, its accuracy and where it comes from (no raw folder name)."""
        return display_name(self)


def _config_problem(cfg: dict[str, Any] | None) -> str | None:
    if cfg is None:
        return f"{CONFIG_FILE} is missing or is not a JSON object"
    from fashion_lib.training.config import TrainConfig

    try:
        TrainConfig.from_dict(cfg)
    except (ValueError, TypeError) as exc:
        return f"{CONFIG_FILE}: {exc}"
    return None


def read_run(folder: Path, shipped: bool = False) -> RunInfo | None:
    """Everything about one run folder, validated; None when the folder is not a run at all."""
    cfg = read_json(folder / CONFIG_FILE)
    if cfg is None and not (folder / STATUS_FILE).exists():
        return None
    problems = []
    if (problem := _config_problem(cfg)) is not None:
        problems.append(problem)
    if shipped:
        state = lifecycle.RunState(lifecycle.COMPLETED, lifecycle.COMPLETED)
    else:
        state = lifecycle.state_of(folder)
        if state.state == lifecycle.DAMAGED:
            problems.append(state.detail)
    summary, problem = read_summary(folder)
    if problem:
        problems.append(problem)
    rows, metric_problems = read_metrics_checked(folder)
    problems.extend(metric_problems[:3])
    # A completed run, or one stopped once it had trained, has saved its model and summary; one stopped
    # while it waited for the machine, or while it prepared (converting product photos), has none.
    if (
        state.state == lifecycle.COMPLETED
        and not rows
        and not metric_problems
        and (folder / METRICS_FILE).exists()
    ):
        problems.append(f"{METRICS_FILE} holds no finished epoch, though the run completed (cut or emptied?)")
    if state.state == lifecycle.COMPLETED or (state.state == lifecycle.STOPPED and rows):
        if not (folder / MODEL_FILE).exists():  # one that is there but no file: _file_problem
            problems.append(f"{MODEL_FILE} is missing")
        if summary is None and problem is None:
            problems.append(f"{SUMMARY_FILE} is missing")
        if (
            summary is not None
            and summary.test_accuracy is not None
            and not (folder / PREDICTIONS_FILE).exists()
        ):
            problems.append(f"{PREDICTIONS_FILE} is missing")
    problems.extend(
        p for p in (_file_problem(folder / MODEL_FILE), _file_problem(folder / PREDICTIONS_FILE)) if p
    )
    return RunInfo(
        run_id=folder.name,
        folder=folder,
        state=state.state,
        model=str((cfg or {}).get("model", "?")),
        shipped=shipped,
        test_accuracy=summary.test_accuracy if summary else None,
        error=state.error,
        problems=tuple(problems),
        detail=state.detail,
        summary=summary,
        config=cfg,
        trial=read_json(folder / TRIAL_FILE),
    )


def read_folder(folder: Path) -> RunInfo | None:
    """``read_run`` for a run folder or a shipped model's, as the folder's place says."""
    return read_run(folder, shipped=is_shipped(folder))


def _file_problem(path: Path) -> str | None:
    """What is wrong with a run's model or predictions file, if it is there (checked once per version)."""
    try:
        stat = path.stat()
    except OSError:
        return None  # a missing file is judged by the run's state above
    if not S_ISREG(stat.st_mode):  # a folder, or a pipe whose read would wait for ever
        return f"{path.name} is not a regular file"
    return _checked_file(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1024)
def _checked_file(path: str, mtime_ns: int, size: int) -> str | None:
    if path.endswith(MODEL_FILE):  # a .keras file is a zip: a cut-off one has no central directory
        return None if zipfile.is_zipfile(path) else f"{MODEL_FILE} is not a complete Keras file (cut off?)"
    from fashion_lib import evaluate

    try:
        evaluate.load_predictions(Path(path).parent)
    except ValueError as exc:
        return str(exc)
    return None


def list_runs(runs_root: Path | None = None, include_shipped: bool = True) -> list[RunInfo]:
    """The user's runs (newest first), then the shipped models. Damaged runs are listed, marked."""
    root = runs_root or config.runs_dir()
    found = []
    if root.is_dir():
        folders = (p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for folder in sorted(folders, key=lambda p: p.name, reverse=True):
            info = read_run(folder)
            if info is not None:
                found.append(info)
    if include_shipped:
        found.extend(shipped_models())
    return found


def shipped_models() -> list[RunInfo]:
    if not config.CACHED_MODELS_DIR.is_dir():
        return []
    found = []
    # Names starting with a dot are a shipment being swapped in (export.ship_run), a lock file, or the model
    # a ship killed halfway left aside: put back, or removed when the new one is in place.
    for name in {p.name[1:].rsplit(".old-", 1)[0] for p in config.CACHED_MODELS_DIR.glob(".*.old-*")}:
        target = config.CACHED_MODELS_DIR / name
        with contextlib.suppress(OSError), files.locked(files.lock_beside(target), remove=True):
            files.restore_interrupted(target)
    for folder in sorted(p for p in config.CACHED_MODELS_DIR.iterdir() if p.is_dir() and p.name[0] != "."):
        info = read_run(folder, shipped=True)
        if info is not None:
            found.append(info)
    return found


def display_name(info: RunInfo, outcome: bool = True) -> str:
    """'MobileNetV2 · 96 px · ImageNet (rebuilt) · 94.50 % · shipped' — what a person reads in a picker.

    ``outcome=False`` leaves out what changes while the run goes on (weights as recorded at the end,
    accuracy, state): see ``picker_name``."""
    summary = info.summary
    cfg = info.config or {}
    parts = [models.DISPLAY_NAMES.get(info.model, info.model)]
    if info.model in models.TRANSFER_MODELS:
        parts.append(f"{cfg.get('input_size', '?')} px")
        if outcome and summary and summary.weights:
            parts.append(summary.weights)
        if cfg.get("fine_tune"):
            parts.append("fine-tuned")
    if cfg.get("input_scaling") == "divide_by_255":
        parts.append("pixels ÷ 255 (prototype bug)")
    if outcome and info.test_accuracy is not None:
        parts.append(wording.percent(info.test_accuracy))
    elif outcome and summary and summary.validation_accuracy is not None:
        parts.append(f"validation {wording.percent(summary.validation_accuracy)}")
    if info.shipped:
        parts.append("shipped")
    else:
        if info.trial:
            parts.append(f"trial {info.trial.get('number')} of {info.trial.get('study')}")
        parts.append(_run_date(info.run_id))
        if outcome and info.state != lifecycle.COMPLETED:
            parts.append(info.state)
    return " · ".join(p for p in parts if p)


def picker_name(info: RunInfo) -> str:
    """'MobileNetV2 · 128 px · fine-tuned · 29 Nov 21:33:54': what the run is, without what changes while
    it runs (state, accuracy). A picker needs labels that stay the same: Streamlit matches the browser's
    choice by its label, and a label that changed between two draws drops the choice."""
    return display_name(info, outcome=False)


def _run_date(run_id: str) -> str:
    """'29 Nov 14:05:12' from a run id that starts with its time stamp ('20261129-140512-…')."""
    try:
        stamp = time.strptime(run_id[:15], "%Y%m%d-%H%M%S")
    except ValueError:
        return run_id
    return time.strftime("%d %b %H:%M:%S", stamp)


# ------------------------------------------------------------------------------------------- writing


def new_run_id(model: str, tag: str = "") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return "-".join(part for part in (stamp, model, tag) if part)


def create_run(config_dict: dict[str, Any], run_id: str, runs_root: Path | None = None, owner=None) -> Path:
    """Make a new run folder holding the config and status 'queued', owned by ``owner`` (this process by
    default); the id gets a suffix if taken."""
    from fashion_lib import processes

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
    lifecycle.create(folder, owner or processes.current())
    return folder


def resolve_run(name_or_path: str, runs_root: Path | None = None) -> Path:
    """A run folder from its id, its path, or a shipped model's name."""
    for candidate in (
        Path(name_or_path),
        (runs_root or config.runs_dir()) / name_or_path,
        config.CACHED_MODELS_DIR / name_or_path,
    ):
        if (candidate / CONFIG_FILE).is_file() or (candidate / STATUS_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"no run named '{name_or_path}' (see `python -m fashion_lib runs`)")


def is_shipped(folder: Path) -> bool:
    return folder.resolve().parent == config.CACHED_MODELS_DIR.resolve()


def delete_run(folder: Path, runs_root: Path | None = None) -> None:
    """Delete a user's run folder (never a shipped model, never outside the runs folder, never while a
    live process owns it)."""
    root = (runs_root or config.runs_dir()).resolve()
    folder = folder.resolve()
    if folder.parent != root:
        raise ValueError(f"{folder} is not a run folder under {root}; shipped models cannot be deleted here")
    from fashion_lib import processes

    state = lifecycle.state_of(folder)
    if state.active and state.owner != processes.current():  # its owner may delete a run it never started
        raise lifecycle.RunStateError(f"run {folder.name} is still active: stop it before deleting it")
    shutil.rmtree(folder)


# ------------------------------------------------------------------------------------ live progress


@dataclass(frozen=True)
class Progress:
    """How far a run is, for a progress bar: a fraction, an ETA in seconds (None when unknown), a phrase."""

    fraction: float
    eta_seconds: float | None
    text: str


def progress_summary(folder: Path) -> Progress:
    """Read ``progress.json`` and the metrics so far and turn them into a fraction and an ETA."""
    p, _ = schemas.check(schemas.Progress, read_json(folder / PROGRESS_FILE) or {}, PROGRESS_FILE)
    if p is None:
        return Progress(0.0, None, "starting")
    if p.phase == "done":
        return Progress(1.0, 0.0, "done")
    if p.phase != "training":
        if p.batch and p.batches:
            started = p.phase_started
            now = time.time()
            rate = p.batch / (now - started) if started and now > started else None
            eta = (p.batches - p.batch) / rate if rate else None
            return Progress(min(1.0, p.batch / p.batches), eta, f"{p.phase}: {p.batch:,} / {p.batches:,}")
        return Progress(1.0 if p.trained else 0.0, None, p.phase)  # the bar never runs back after training
    planned = max(p.planned_epochs, p.epochs, p.epoch)
    within = min(1.0, p.batch / p.batches)
    fraction = min(1.0, (p.epoch - 1 + within) / planned)
    stage = "fine-tuning" if p.stage == 2 else "training"
    text = f"{stage}: epoch {p.epoch} of {planned}, batch {p.batch} of {p.batches}"
    # The rate of this epoch after its first batch (graph tracing and warm-up make that one slow).
    measured = p.batch - p.warm_batch
    rate = (
        measured / (p.epoch_elapsed - p.warm_elapsed)
        if measured > 0 and p.epoch_elapsed > p.warm_elapsed
        else None
    )
    if rate is None:
        return Progress(fraction, None, text)
    finished = [r["seconds"] for r in read_metrics(folder) if r["stage"] == p.stage and not r["partial"]]
    epoch_seconds = sum(finished) / len(finished) if finished else p.batches / rate
    eta = (p.batches - p.batch) / rate + (max(p.epochs, p.epoch) - p.epoch) * epoch_seconds
    if planned > p.epochs:  # fine-tuning still to come: its own (slower) epochs, as estimated
        eta += _fine_tuning_estimate(folder)
    return Progress(fraction, eta, text)


def _fine_tuning_estimate(folder: Path) -> float:
    from fashion_lib.training import estimates
    from fashion_lib.training.config import TrainConfig

    try:
        phases = estimates.estimate_seconds(TrainConfig.from_run(folder)).phases
    except (ValueError, TypeError):
        return 0.0
    return phases.get("stage 2 (fine-tuning)", 0.0)


# ------------------------------------------------------------------------------------------ comparison


def comparable_runs() -> list[RunInfo]:
    """Finished, undamaged runs with test-set predictions (newest first), then the shipped models."""
    return [
        r
        for r in list_runs()
        if r.finished and not r.damaged and r.test_accuracy is not None and r.has_predictions
    ]


def shipped_from(info: RunInfo) -> str | None:
    """The run a shipped model was copied from (its card says), None for anything else."""
    card = read_json(info.folder / CARD_FILE) if info.shipped else None
    run_id = card.get("run_id") if isinstance(card, dict) else None
    return run_id if isinstance(run_id, str) else None


def default_comparison(candidates: list[RunInfo]) -> list[RunInfo]:
    """What a comparison (or the report) starts with: every shipped model, and the best completed run of
    each model family among the user's own (never a collapsed one, nor the run a shipped model is a copy
    of: the same model twice)."""
    chosen = [r for r in candidates if r.shipped]
    copied = {shipped_from(r) for r in chosen}
    for family in models.MODEL_NAMES:
        own = [
            r
            for r in candidates
            if r.model == family
            and not r.shipped
            and r.state == lifecycle.COMPLETED
            and r.run_id not in copied
        ]
        best = default_choice(own)
        if best is not None and not best.damaged and not is_collapsed(best):
            chosen.append(best)
    return chosen


STAGE_TIMES = {  # summary key → how the card (and Compare) names it
    "training_seconds": "training",  # the baseline's one stage
    "photo_conversion_seconds": "product photos",
    "teacher_seconds": "teachers' answers",
    "feature_extraction_seconds": "backbone features",
    "head_training_seconds": "head",
    "stage2_seconds": "fine-tuning",
    "test_prediction_seconds": "test predictions",
}


def stage_seconds(summary: dict[str, Any], cfg: dict[str, Any]) -> dict[str, float]:
    """Each stage's time the run recorded, by its ``STAGE_TIMES`` key. The baseline's stage 1 is its
    training; a transfer model whose head trained on images (augmentation, or no feature cache) recorded
    it only as stage 1 (no features to extract): that is the head's time."""
    summary = dict(summary)
    if cfg.get("model") not in models.TRANSFER_MODELS:
        summary["training_seconds"] = summary.get("stage1_seconds")
    elif summary.get("head_training_seconds") is None and summary.get("feature_extraction_seconds") is None:
        summary["head_training_seconds"] = summary.get("stage1_seconds")
    return {k: summary[k] for k in STAGE_TIMES if summary.get(k) is not None}


COMPARISON_COLUMNS = (
    "model",
    "test accuracy",
    "macro-F1",
    "run time s",
    "latency ms/image (batched)",
    "size MB",
    "parameters",
)  # what matters first; the other columns are details


def comparison_table(infos: list[RunInfo]) -> list[dict[str, Any]]:
    """One row per run, read from its validated summary: the COMPARISON_COLUMNS first, then the details."""
    rows = []
    for info in infos:
        s = info.summary or schemas.Summary()
        params = s.parameters
        final = params.get("stage2") or params.get("stage1")
        extra = s.model_extra or {}
        rows.append(
            {
                "model": info.label,
                "test accuracy": s.test_accuracy,
                "macro-F1": s.macro_f1,
                "run time s": s.wall_seconds,
                "latency ms/image (batched)": s.latency_ms_per_image_batched,
                "size MB": s.model_size_bytes / 1e6 if s.model_size_bytes is not None else None,
                "parameters": final.total if final else None,
                "run": info.run_id,
                "family": s.display_name or info.model,
                "weights": s.weights,
                "input size": s.input_size,
                "training images": s.training_images,
                "epochs": s.epochs_run,
                "trainable (stage 1)": params["stage1"].trainable if "stage1" in params else None,
                "trainable (fine-tuning)": params["stage2"].trainable if "stage2" in params else None,
                "latency ms (one image)": s.latency_ms_single_image,
                "CPU s": _number(extra.get("cpu_seconds")),
                **_stage_columns(info, extra),
            }
        )
    stages = [f"{name} s" for name in STAGE_TIMES.values()]
    shown = [c for c in stages if any(row.get(c) is not None for row in rows)]  # in stage order
    return [
        {**{k: v for k, v in row.items() if k not in stages}, **{c: row.get(c) for c in shown}}
        for row in rows
    ]


def _stage_columns(info: RunInfo, extra: dict[str, Any]) -> dict[str, float | None]:
    """Each stage's seconds under the model card's names (the run time is their sum and a little more:
    loading the data, building the model, calibrating)."""
    times = stage_seconds(extra, info.config or {"model": info.model})
    return {f"{STAGE_TIMES[k]} s": _number(v) for k, v in times.items()}


def run_rows(infos: list[RunInfo]) -> list[dict[str, Any]]:
    """One row per run for the run tables (Home, Train): the same columns and states everywhere."""
    return [
        {
            "run": info.run_id,
            "model": display_name(info),
            "status": "shipped" if info.shipped else ("damaged" if info.damaged else info.state),
            "test accuracy": wording.percent(info.test_accuracy),  # '—' until there is one
            "problem": _row_problem(info),
        }
        for info in infos
    ]


def _row_problem(info: RunInfo) -> str:
    """What is wrong with a run, for its row: damage, the error it ended with, or a collapsed model (the
    Error analysis page warned about one; the run tables said nothing)."""
    if info.problems or info.error:
        return "; ".join(info.problems) or info.error or ""
    finished = info.state == lifecycle.COMPLETED and (info.folder / PREDICTIONS_FILE).is_file()
    if finished and is_collapsed(info):
        return "collapsed: one class for almost everything, or near-chance accuracy (see Error analysis)"
    return ""


@functools.lru_cache(maxsize=256)
def _collapse(folder: str, mtime_ns: int):
    from fashion_lib import evaluate

    try:
        saved = evaluate.load_predictions(Path(folder))
    except (OSError, ValueError, KeyError):
        return None
    return evaluate.collapse_report(saved.labels, saved.probabilities)


def collapse_of(info: RunInfo):
    """The collapse detector's report on the run's test predictions (``evaluate.CollapseReport``, cached per
    file version), or None when they are missing or cannot be read."""
    path = info.folder / PREDICTIONS_FILE
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    return _collapse(str(info.folder), mtime)


def is_collapsed(info: RunInfo) -> bool:
    """Whether the run's test predictions are one class for almost everything, or near chance (unreadable
    ones count too: such a run is never a default)."""
    collapse = collapse_of(info)
    return collapse is None or collapse.collapsed


def default_choice(candidates: list[RunInfo], last_choice: str | None = None) -> RunInfo | None:
    """The model a page opens on: the user's last explicit choice (a run id) when it is still there, else
    the best completed model by test accuracy, shipped models included, never a collapsed one; None when
    there is no candidate at all."""
    by_id = {info.run_id: info for info in candidates}
    if last_choice in by_id:
        return by_id[last_choice]
    sound = [
        info
        for info in candidates
        if info.state == lifecycle.COMPLETED
        and not info.damaged
        and info.test_accuracy is not None
        and not is_collapsed(info)
    ]
    if sound:
        return max(sound, key=lambda info: (info.test_accuracy, info.shipped))
    return candidates[0] if candidates else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def per_class_f1(infos: list[RunInfo]) -> list[dict[str, Any]]:
    rows = []
    for info in infos:
        if info.summary is not None:
            for name, value in info.summary.per_class_f1.items():
                rows.append({"run": info.run_id, "class": name, "F1": value})
    return rows
