"""How long a training run will take and how much memory it will need, before it starts."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from fashion_lib import models
from fashion_lib.training.config import CALIBRATION_IMAGES, TrainConfig

# Forward throughput (images/s, batch 64) measured on the project's 2-core CPU machines, by input size.
FORWARD_SPEED = {
    models.EFFICIENTNET_B0: {32: 1385, 64: 672, 96: 379, 128: 121, 224: 41},
    models.MOBILENET_V2: {32: 2105, 64: 1020, 96: 421, 128: 320, 224: 94},
}
# Images/s training the baseline CNN (batch 128) on the same machines, by compute dtype: median step
# times of 64 and 57 ms on a quiet machine (the same machine was up to 40 % slower at other hours).
BASELINE_TRAIN_SPEED = {"float32": 2000, "bfloat16": 2250}
FINE_TUNE_SLOWDOWN = 2.5  # fine-tuning runs the backbone forward and part of it backward


def forward_speed(model: str, size: int) -> float:
    table = FORWARD_SPEED[model]
    sizes = sorted(table)
    return float(np.exp(np.interp(np.log(size), np.log(sizes), np.log([table[s] for s in sizes]))))


def estimate_seconds(cfg: TrainConfig, feature_cache_ready: bool = False) -> dict[str, float]:
    """Rough seconds per stage on a 2-core CPU like the development machine (all epochs, no early stop)."""
    n_pool = cfg.subset or 60000
    n_train = round(n_pool * (1 - cfg.val_fraction))
    n_test = cfg.test_subset or 10000
    if not cfg.is_transfer:
        speed = BASELINE_TRAIN_SPEED[cfg.compute_dtype]
        return {"training": cfg.epochs * n_pool / speed, "test predictions": n_test / 20000}
    speed = forward_speed(cfg.model, cfg.input_size)
    out = {}
    if cfg.uses_feature_cache():
        out["feature extraction"] = 0.0 if feature_cache_ready else n_pool / speed
        out["head training"] = cfg.epochs * n_pool / 50000
    else:
        out["stage 1 (frozen backbone)"] = cfg.epochs * n_pool / speed * 1.2
    if cfg.fine_tune:
        out["stage 2 (fine-tuning)"] = (
            cfg.fine_tune_epochs * (n_train * FINE_TUNE_SLOWDOWN + n_pool - n_train) / speed
        )
    if cfg.temperature_scaling:
        out["calibration"] = min(n_pool - n_train, CALIBRATION_IMAGES) / speed
    out["test predictions"] = n_test / speed
    return out


# Peak resident memory (GiB) of fine-tuning at 224 px by batch size: EfficientNetB0 (the larger of the two
# backbones) with every layer unfrozen, the worst case, measured on the 24 GB development machine (`python -m
# bench.transfer --memory-only --fine-tune-layers 300`). Memory grows with the batch and the pixel count;
# TensorFlow, the data and the weights stay. (With the top 30 layers unfrozen the peak stayed at 6.0 GiB
# from batch 16 to 128.)
MEMORY_AT_224 = {32: 6.3, 128: 10.3}
MEMORY_SHARE = 0.6  # warn when the estimate passes this share of the machine's memory


def machine_memory_gb() -> float:
    """This machine's memory, or the container's limit when that is lower."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            limits.append(int(Path(path).read_text().strip()))
    return min(limits) / 2**30


def _memory_model() -> tuple[float, float]:
    """(fixed GB, GB per image at 224 px) from the two measurements."""
    (b1, m1), (b2, m2) = sorted(MEMORY_AT_224.items())
    per_image = (m2 - m1) / (b2 - b1)
    return m1 - b1 * per_image, per_image


def memory_estimate_gb(cfg: TrainConfig) -> float | None:
    """Estimated peak memory of transfer models trained on images (None when no backbone trains on images)."""
    if not cfg.is_transfer or (cfg.uses_feature_cache() and not cfg.fine_tune):
        return None
    fixed, per_image = _memory_model()
    return fixed + per_image * cfg.batch_size * (cfg.input_size / 224) ** 2


def memory_warning(cfg: TrainConfig) -> str | None:
    estimate = memory_estimate_gb(cfg)
    if estimate is None:
        return None
    available = machine_memory_gb()
    limit = MEMORY_SHARE * available
    if estimate < limit:
        return None
    fixed, per_image = _memory_model()
    safe = int((limit - fixed) / (per_image * (cfg.input_size / 224) ** 2))
    advice = (
        f"Use a batch of {safe // 8 * 8 if safe >= 8 else safe} or less, or a smaller input size."
        if safe >= 1
        else "Use a smaller input size."
    )
    return (
        f"At {cfg.input_size} px with batch {cfg.batch_size} this training needs roughly {estimate:.0f} GB; "
        f"this machine has {available:.0f} GB and the system may stop the run for lack of memory. {advice}"
    )
