"""How fast this machine trains a configuration: measured, never assumed.

Two sources, kept per machine and per *speed key* (what decides the speed: the model, input size, batch
size, compute dtype, fine-tuned layers, the baseline's widths) in ``$FASHION_HOME/cache/speeds.json``:

- every finished run records what it measured (seconds per image for each stage, and the fixed cost of
  loading data, building, calibrating and evaluating);
- ``measure`` times a few real training steps of a configuration on random images (a few seconds), when no
  run of that key has finished yet.

The time estimate uses these and says which one it stands on.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fashion_lib import config, files, runs
from fashion_lib.training.config import TrainConfig

SPEEDS_FILE = "speeds.json"
MEASURE_STEPS = 6  # timed training steps (after one warm-up step) for a measurement


@dataclass(frozen=True)
class Speeds:
    """Seconds per image of each kind of work, and the fixed seconds a run costs besides its epochs."""

    train_s_per_image: float | None = None  # one training step's share per image (stage 1 on images)
    forward_s_per_image: float | None = None  # inference: validation, features, test predictions
    fine_tune_s_per_image: float | None = None  # one fine-tuning step's share per image (stage 2)
    head_s_per_image: float | None = None  # training the head on cached features (a whole epoch)
    overhead_s: float | None = None  # data, building, saving, calibrating, evaluating (not the epochs)
    basis: str = ""
    measured_at: float = 0.0


def machine_id() -> str:
    """This machine as far as speed goes: host name, processor and core count."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{socket.gethostname()}|{model}|{os.cpu_count()} cores"


def speed_key(cfg: TrainConfig) -> str:
    if not cfg.is_transfer:
        filters = "-".join(map(str, cfg.conv_filters))
        return f"baseline|batch {cfg.batch_size}|{cfg.compute_dtype}|{filters}|{cfg.dense_units}"
    tuned = cfg.fine_tune_layers if cfg.fine_tune else 0
    return f"{cfg.model}|{cfg.input_size} px|batch {cfg.batch_size}|{cfg.compute_dtype}|fine-tune {tuned}"


def _path() -> Path:
    return config.cache_dir() / SPEEDS_FILE


def _table() -> dict:
    try:
        value = files.parse_json(files.read_bytes(_path()))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def known(cfg: TrainConfig) -> Speeds | None:
    """What this machine measured for ``cfg``'s speed key, or None."""
    entry = _table().get(machine_id(), {}).get(speed_key(cfg))
    if not isinstance(entry, dict):
        return None
    try:
        return Speeds(**{k: v for k, v in entry.items() if k in Speeds.__dataclass_fields__})
    except TypeError:
        return None


def remember(cfg: TrainConfig, speeds: Speeds) -> None:
    """Keep ``speeds`` for this machine and key; fields it leaves None keep their earlier values. The file
    is locked while it is read and written (tuning workers finish runs at the same time)."""
    with files.locked(_path().parent / ".speeds.lock"):
        table = _table()
        entries = table.setdefault(machine_id(), {})
        old = entries.get(speed_key(cfg), {})
        new = {k: v for k, v in asdict(speeds).items() if v not in (None, "")}
        entries[speed_key(cfg)] = {**(old if isinstance(old, dict) else {}), **new}
        runs.write_json(_path(), table)


def record_run(cfg: TrainConfig, folder: Path) -> Speeds | None:
    """Turn a finished run's timings into speeds for its key (None when it measured too little)."""
    if not cfg.evaluate_test:
        return None  # a tuning trial skips calibration and the test set: its fixed cost is not a run's
    summary = runs.read_json(folder / runs.SUMMARY_FILE) or {}
    rows = runs.read_metrics(folder)
    n_train, n_val = summary.get("training_images"), summary.get("validation_images")
    n_photos = int(summary.get("training_photos") or 0)  # shown to the image stages besides n_train
    if not n_train or not rows or not isinstance(summary.get("wall_seconds"), int | float):
        return None

    # A stage's first epoch carries graph tracing (a 1,000-image epoch took 2.1 s, of which 1.3 s were its
    # first batch): a per-image rate from it made the next estimate 4× too long. The steady epoch comes from
    # the later epochs, else the first without its first batch; the tracing counts as a fixed cost.
    tracing = 0.0

    def epoch_seconds(stage: int) -> float | None:
        nonlocal tracing
        done = [r for r in rows if r["stage"] == stage and not r["partial"]]
        if not done:
            return None
        first = done[0]
        if len(done) > 1:
            steady = float(np.median([r["seconds"] for r in done[1:]]))
        elif first["warm_seconds"] is not None and (first["batches"] or 0) > 1:
            steady = (first["seconds"] - first["warm_seconds"]) * first["batches"] / (first["batches"] - 1)
        else:  # a run from before the record of its first batch
            steady = first["seconds"]
        tracing += max(0.0, first["seconds"] - steady)
        return steady

    fields: dict = {}
    stage1, stage2 = epoch_seconds(1), epoch_seconds(2)
    if summary.get("feature_cache"):
        extraction = summary.get("feature_extraction_seconds")
        extracted = summary.get("features_extracted")  # computed, not read from the cache
        if isinstance(extracted, int):
            if extracted > 0 and extraction:
                fields["forward_s_per_image"] = extraction / extracted
        elif extraction and extraction > 1.0:  # a run from before the count: a cache hit measures nothing
            fields["forward_s_per_image"] = extraction / (n_train + (n_val or 0))
        if stage1:
            fields["head_s_per_image"] = stage1 / n_train
    elif stage1:
        fields["train_s_per_image"] = stage1 / (n_train + n_photos + 0.25 * (n_val or 0))  # val ≈ a quarter
    if stage2:
        fields["fine_tune_s_per_image"] = stage2 / (n_train + n_photos + 0.25 * (n_val or 0))
    parts = ["stage1_seconds", "stage2_seconds", "photo_conversion_seconds"]
    if not summary.get("teacher_pass_reused"):  # a pass a stopped run made is not in this wall time
        parts.append("teacher_seconds")
    spent = sum(float(summary.get(k) or 0.0) for k in parts) - tracing
    fields["overhead_s"] = max(0.0, _click_to_done(folder, float(summary["wall_seconds"])) - spent)
    speeds = Speeds(**fields, basis=f"measured by run {folder.name}", measured_at=time.time())
    remember(cfg, speeds)
    return speeds


def _click_to_done(folder: Path, wall_seconds: float) -> float:
    """Seconds from the launch (or, for a run trained in-process, its start) to its end: more than the
    summary's wall time, which begins after Python and TensorFlow have started."""
    from fashion_lib import lifecycle

    status, _ = lifecycle.read_status(folder)
    job = lifecycle.read_job(folder)
    begun = job.launched_at if job else (status.started if status else None)
    if status is None or status.finished is None or begun is None or status.finished < begun:
        return wall_seconds
    return max(wall_seconds, status.finished - begun)


def measure(cfg: TrainConfig, steps: int = MEASURE_STEPS) -> Speeds:
    """Time real training (and, for transfer models, inference and fine-tuning) steps of ``cfg`` on random
    images; a few seconds. The weights do not change the speed, so no ImageNet file is needed."""
    import keras

    from fashion_lib import models
    from fashion_lib.training.fitting import make_optimizer

    model = cfg.build_model(weights="none")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (cfg.batch_size, config.IMAGE_SIZE, config.IMAGE_SIZE, 1)).astype(np.float32)
    y = rng.integers(0, config.NUM_CLASSES, cfg.batch_size)

    def per_image(step) -> float:
        step()  # tracing and warm-up
        started = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - started) / (steps * cfg.batch_size)

    def train_steps() -> float:
        model.compile(
            optimizer=make_optimizer(cfg.optimizer, cfg.learning_rate), loss="sparse_categorical_crossentropy"
        )
        return per_image(lambda: model.train_on_batch(x, y))

    forward = per_image(lambda: model(x, training=False))
    fields = {"forward_s_per_image": forward}
    if cfg.is_transfer:
        if cfg.fine_tune:
            models.set_stage(model, 2, cfg.fine_tune_layers)
            fields["fine_tune_s_per_image"] = train_steps()
        if not cfg.uses_feature_cache():
            models.set_stage(model, 1)
            fields["train_s_per_image"] = train_steps()
    else:
        fields["train_s_per_image"] = train_steps()
    keras.backend.clear_session()
    speeds = Speeds(
        **fields, basis=f"measured: {steps} training steps on this machine", measured_at=time.time()
    )
    remember(cfg, speeds)
    return speeds
