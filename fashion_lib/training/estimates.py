"""How long a training run will take and how much memory it will need, before it starts."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_lib import models
from fashion_lib.training import distill, speed
from fashion_lib.training.config import TrainConfig

# Fallbacks until this machine has measured a configuration (fashion_lib.training.speed): forward throughput
# (images/s, batch 64) measured on the project's 2-core development machine, by input size …
FORWARD_SPEED = {
    models.EFFICIENTNET_B0: {32: 1385, 64: 672, 96: 379, 128: 121, 224: 41},
    models.MOBILENET_V2: {32: 2105, 64: 1020, 96: 421, 128: 320, 224: 94},
}
# … images/s training the baseline CNN (batch 128) there, by compute dtype …
BASELINE_TRAIN_SPEED = {"float32": 2000, "bfloat16": 2250}
FINE_TUNE_SLOWDOWN = 2.5  # … fine-tuning runs the backbone forward and part of it backward …
FROZEN_SLOWDOWN = 1.2  # … a frozen backbone trained end to end (augmentation) still runs it forward …
HEAD_SPEED = 50000  # … images/s of one epoch of the head on cached features …
OVERHEAD_S = 5.0  # … and the seconds from launch to end besides the epochs (4–5 s for small runs here).
PHOTO_S_PER_IMAGE = 0.105  # rendering + converting one product photo (--photo-mix) on one core, here
VALIDATION_SHARE = 0.25  # an epoch's validation pass costs about a quarter of a training step per image


def forward_speed(model: str, size: int) -> float:
    table = FORWARD_SPEED[model]
    sizes = sorted(table)
    return float(np.exp(np.interp(np.log(size), np.log(sizes), np.log([table[s] for s in sizes]))))


@dataclass(frozen=True)
class Estimate:
    """Seconds per phase, and what the numbers stand on."""

    phases: dict[str, float]
    basis: str
    measured: bool

    @property
    def total(self) -> float:
        return sum(self.phases.values())

    @property
    def written_total(self) -> float:
        """The total to write beside the phases: their sum in whole seconds, as each is written ("53 s
        (training 46 s, start, calibration and evaluation 6 s)" did not add up)."""
        return float(sum(round(seconds) for seconds in self.phases.values()))


def _fallback(cfg: TrainConfig) -> speed.Speeds:
    if not cfg.is_transfer:
        return speed.Speeds(
            train_s_per_image=1 / BASELINE_TRAIN_SPEED[cfg.compute_dtype],
            forward_s_per_image=1 / (4 * BASELINE_TRAIN_SPEED[cfg.compute_dtype]),
            overhead_s=OVERHEAD_S,
        )
    forward = 1 / forward_speed(cfg.model, cfg.input_size)
    return speed.Speeds(
        train_s_per_image=FROZEN_SLOWDOWN * forward,
        forward_s_per_image=forward,
        fine_tune_s_per_image=FINE_TUNE_SLOWDOWN * forward,
        head_s_per_image=1 / HEAD_SPEED,
        overhead_s=OVERHEAD_S,
    )


RATE_NAMES = {  # speed.Speeds fields as the basis line writes them (it showed "overhead_s")
    "train_s_per_image": "the training speed",
    "forward_s_per_image": "the prediction speed",
    "fine_tune_s_per_image": "the fine-tuning speed",
    "head_s_per_image": "the head's training speed",
    "overhead_s": "the fixed cost (start, calibration, evaluation)",
}


def estimate_seconds(cfg: TrainConfig, feature_cache_ready: bool = False) -> Estimate:
    """Seconds per phase of ``cfg`` (all epochs, no early stop) from what this machine measured — a
    finished run of the same speed key, or ``speed.measure`` — else from the development machine's
    constants, and says which."""
    measured = speed.known(cfg)
    fallback = _fallback(cfg)

    def rate(name: str) -> float:
        value = getattr(measured, name, None) if measured else None
        used.add(name if value is not None else f"~{name}")
        return value if value is not None else getattr(fallback, name)

    used: set[str] = set()
    n_pool = cfg.subset or 60000
    n_val = round(n_pool * cfg.val_fraction)
    n_train, n_test = n_pool - n_val, (cfg.test_subset or 10000) if cfg.evaluate_test else 0
    epoch_images = n_train + VALIDATION_SHARE * n_val
    photos = min(cfg.photo_mix, n_train)  # shown to the image stages on top of the training split
    out = {}
    if photos:
        cores = os.cpu_count() or 1
        out["product photos (converted once, then cached)"] = photos * PHOTO_S_PER_IMAGE / cores
    if cfg.teachers and (cfg.fine_tune or not cfg.uses_feature_cache()):
        # one forward pass per teacher over the image stages' images, at the speed the teacher's own run
        # predicted its test images (this model's where that is unknown)
        out["teachers' answers"] = (n_train + photos) * sum(
            distill.seconds_per_image(name) or rate("forward_s_per_image") for name in cfg.teachers
        )
    if cfg.uses_feature_cache():
        out["feature extraction"] = (
            0.0 if feature_cache_ready else (n_train + n_val) * rate("forward_s_per_image")
        )
        out["head training"] = cfg.epochs * n_train * rate("head_s_per_image")
    else:
        label = "training" if not cfg.is_transfer else "stage 1 (frozen backbone)"
        out[label] = cfg.epochs * (epoch_images + photos) * rate("train_s_per_image")
    if cfg.fine_tune:
        out["stage 2 (fine-tuning)"] = (
            cfg.fine_tune_epochs * (epoch_images + photos) * rate("fine_tune_s_per_image")
        )
    fixed = rate("overhead_s")
    if not (measured and measured.overhead_s):  # a measured overhead already holds the evaluation
        fixed += (n_val + n_test) * rate("forward_s_per_image")
    out["start, calibration and evaluation"] = fixed
    guessed = sorted(RATE_NAMES[name.lstrip("~")] for name in used if name.startswith("~"))
    if not guessed:
        basis = f"{measured.basis} (same model, size, batch and precision)"
    elif len(guessed) < len(used):
        basis = f"partly {measured.basis}; {', '.join(guessed)} from the development machine's constants"
    else:
        basis = "constants measured on the project's development machine, not this one: measure to be sure"
    return Estimate(out, basis, not guessed)


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
