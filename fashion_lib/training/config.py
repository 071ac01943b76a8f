"""``TrainConfig``: everything that defines a training run, validated, with a JSON round-trip.

The Train page's form, the command line's flags and the tuner all produce this one object.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fashion_lib import augment, config, files, models

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
INPUT_SCALINGS = ("raw", "divide_by_255")
LR_SCHEDULES = ("plateau", "cosine", "constant")
CALIBRATION_IMAGES = 2000  # validation images the temperature is fitted on (one number needs few)

FIELD_HELP = {
    "input_size": "transfer models: the size the 28×28 input is resized to inside the model (32–224)",
    "weights": "transfer models: 'imagenet', 'none' (random initialisation) or a weights file path",
    "subset": "balanced training subset size (0 = all 60,000), split again into train/validation",
    "val_fraction": "share of the training images held out for validation (stratified)",
    "test_subset": "balanced test subset for quick runs (0 = all 10,000)",
    "lr_schedule": "plateau: reduce on validation-loss plateau; cosine: cosine decay; constant",
    "fine_tune": "stage 2: unfreeze the top layers of the backbone and continue at a lower learning rate",
    "fine_tune_layers": "how many top backbone layers to unfreeze (BatchNormalization stays frozen)",
    "label_smoothing": "share of each target spread evenly over all classes (0 = plain cross-entropy)",
    "temperature_scaling": "after training, fit one temperature on the validation split and fold it into "
    "the output layer, so confidences match accuracy (predicted classes unchanged)",
    "compute_dtype": "float32, or bfloat16: mixed precision with float32 weights, faster on CPUs with "
    "AVX512-BF16/AMX (the saved model computes in float32)",
    "early_stopping_patience": "epochs without validation-loss improvement before stopping (0 = off)",
    "feature_cache": "frozen backbone, no augmentation: train the head on cached backbone features",
    "input_scaling": "raw (correct: models scale inside) or divide_by_255 (reproduces the prototype's bug)",
    "dropout": "dropout before the output layer (0–0.8); unset: 0.2 for the baseline, 0.3 for transfer",
    "conv_filters": "baseline: filters of its three convolutions, e.g. 16,64,128",
    "dense_units": "baseline: units of its hidden dense layer",
    "photo_mix": "this many training images are also rendered as product photos, converted back the way "
    "uploads are, and added to training (the image stages: the baseline's, or fine-tuning); 0 = none",
    "teachers": "finished runs to learn from as well as the labels (run ids, comma separated; none may have "
    "trained on this run's validation images): distillation, in the stages that train on images",
    "distill_weight": "with teachers: the share of each target taken from the teachers' softened answer "
    "(above 0, at most 1; the rest is the label)",
    "evaluate_test": "evaluate on the test set after training (tuning trials do not: validation only)",
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. The UI form, the CLI flags and the tuner all produce this."""

    model: str = models.BASELINE
    input_size: int = models.DEFAULT_INPUT_SIZE  # transfer models only; the baseline reads 28×28
    weights: str = "none"  # "imagenet", "none" (random initialisation) or a weights file path
    interpolation: str = "bilinear"
    subset: int = 0  # balanced training subset size; 0 = all 60,000
    val_fraction: float = 0.1
    test_subset: int = 0  # balanced test subset for quick runs; 0 = all 10,000
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    lr_schedule: str = "plateau"  # "plateau" (reduce on plateau), "cosine" or "constant"
    augment: augment.AugmentConfig = field(default_factory=augment.AugmentConfig)
    fine_tune: bool = False
    fine_tune_layers: int = 30
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 1e-4
    label_smoothing: float = 0.0  # 0.1 moves 10 % of each target's weight evenly onto all classes
    compute_dtype: str = "float32"  # "bfloat16": mixed precision while training
    temperature_scaling: bool = True  # calibrate the output on the validation split after training
    early_stopping_patience: int = 3  # epochs without val-loss improvement; 0 = off
    feature_cache: bool = True
    input_scaling: str = "raw"  # "divide_by_255" reproduces the original prototype's bug (pitfall lab)
    dropout: float | None = None  # None: the model's own default
    conv_filters: tuple[int, int, int] = models.BASELINE_FILTERS  # baseline only
    dense_units: int = models.BASELINE_DENSE_UNITS  # baseline only
    photo_mix: int = 0  # training images also shown as converted product photos (see photo_mix.py)
    teachers: tuple[str, ...] = ()  # runs to distil from (see distill.py)
    distill_weight: float = 0.5
    evaluate_test: bool = True
    seed: int = 42

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", augment.AugmentConfig.from_dict(self.augment))
        elif not isinstance(self.augment, augment.AugmentConfig):  # "foo" or null from a file or a --fix
            raise ValueError(
                f"invalid training config: 'augment' must be a JSON object of augmentation settings, got "
                f"{self.augment!r:.40}"
            )
        if isinstance(self.conv_filters, list | str):
            object.__setattr__(self, "conv_filters", parse_filters(self.conv_filters))
        if isinstance(self.teachers, list | str):
            object.__setattr__(self, "teachers", parse_names(self.teachers))
        config.check_types(self, "training config")
        problems = self._problems()
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if self.model not in models.MODEL_NAMES:
            problems.append(f"model must be one of {', '.join(models.MODEL_NAMES)}, got '{self.model}'")
        if not models.MIN_INPUT_SIZE <= self.input_size <= models.MAX_INPUT_SIZE:
            problems.append(
                f"input size must be {models.MIN_INPUT_SIZE}–{models.MAX_INPUT_SIZE}, got {self.input_size}"
            )
        if self.interpolation not in models.INTERPOLATIONS:
            problems.append(f"interpolation must be one of {', '.join(models.INTERPOLATIONS)}")
        if self.model == models.BASELINE and self.weights not in ("none", ""):
            problems.append(
                f"the baseline CNN trains from scratch and takes no weights (got '{self.weights}'); "
                "ImageNet weights apply to the transfer models"
            )
        if not (self.subset == 0 or 20 <= self.subset <= 60000):
            problems.append(f"subset must be 0 (all) or 20–60000 images, got {self.subset}")
        if not (self.test_subset == 0 or 10 <= self.test_subset <= 10000):
            problems.append(f"test subset must be 0 (all) or 10–10000 images, got {self.test_subset}")
        if not 0.01 <= self.val_fraction <= 0.5:
            problems.append(f"validation fraction must be 0.01–0.5, got {self.val_fraction}")
        if self.epochs < 1 or (self.fine_tune and self.fine_tune_epochs < 1):
            problems.append("epochs must be at least 1")
        if not 0 <= self.seed < 2**32:  # NumPy's limit: a run folder was made, then failed on it
            problems.append(f"seed must be 0–{2**32 - 1}, got {self.seed}")
        if not 1 <= self.batch_size <= 4096:
            problems.append(f"batch size must be 1–4096, got {self.batch_size}")
        if not (0 < self.learning_rate <= 1 and 0 < self.fine_tune_learning_rate <= 1):
            problems.append("learning rates must be in (0, 1]")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.compute_dtype not in models.COMPUTE_DTYPES:
            problems.append(f"compute dtype must be one of {', '.join(models.COMPUTE_DTYPES)}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.input_scaling not in INPUT_SCALINGS:
            problems.append(f"input_scaling must be one of {', '.join(INPUT_SCALINGS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}")
        if self.fine_tune and self.model == models.BASELINE:
            problems.append("fine-tuning applies to the transfer models, not the baseline")
        if self.fine_tune and self.fine_tune_layers < 1:
            problems.append("fine-tuning needs at least 1 layer to unfreeze")
        if self.dropout is not None and not 0 <= self.dropout <= 0.8:
            problems.append(f"dropout must be 0–0.8, got {self.dropout}")
        if len(self.conv_filters) != 3 or not all(1 <= f <= 512 for f in self.conv_filters):
            problems.append(f"conv filters must be three numbers 1–512, got {self.conv_filters}")
        if not 1 <= self.dense_units <= 4096:
            problems.append(f"dense units must be 1–4096, got {self.dense_units}")
        if not 0 <= self.photo_mix <= 60000:
            problems.append(f"photo mix must be 0–60000 images, got {self.photo_mix}")
        elif self.photo_mix and self.uses_feature_cache() and not self.fine_tune:
            problems.append(
                "photo mix adds images to the stages that train on images: turn on fine-tuning, or turn "
                "off the feature cache (the head then trains on images too)"
            )
        if not 0 <= self.distill_weight <= 1:
            problems.append(f"distill weight must be 0–1, got {self.distill_weight}")
        elif self.teachers and self.distill_weight == 0:
            problems.append("a distill weight of 0 takes nothing from the teachers: leave the teachers out")
        if len(set(self.teachers)) < len(self.teachers):
            problems.append("each teacher may be named once")
        if self.teachers and self.uses_feature_cache() and not self.fine_tune:
            problems.append(
                "teachers teach the stages that train on images: turn on fine-tuning, or turn off the "
                "feature cache (the head then trains on images too)"
            )
        return problems

    # -- JSON round-trip
    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["augment"] = self.augment.to_dict()
        values["conv_filters"] = list(self.conv_filters)
        values["teachers"] = list(self.teachers)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return config.dataclass_from_dict(cls, values, "training settings")

    @classmethod
    def from_run(cls, folder: Path) -> TrainConfig:
        """The config a run folder was made with; ValueError when it is missing or invalid."""
        try:
            values = files.parse_json(files.read_bytes(folder / "config.json"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{folder.name} has no readable config.json ({exc})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{folder.name}/config.json is not a JSON object")
        return cls.from_dict(values)

    def command(self) -> str:
        """The command line that trains this config: the model and every setting that is not a default."""
        default = TrainConfig().to_dict()
        parts = ["python -m fashion_lib train"]
        for key, value in self.to_dict().items():
            if value == default[key] and key != "model":
                continue
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                parts.append(flag if value else f"--no-{key.replace('_', '-')}")
            elif isinstance(value, dict):
                parts.append(f"{flag} '{json.dumps(value, sort_keys=True)}'")
            elif isinstance(value, list):
                parts.append(f"{flag} {','.join(map(str, value))}")
            else:
                parts.append(f"{flag} {value}")
        return " ".join(parts)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(files.parse_json(text))

    # -- derived
    @property
    def is_transfer(self) -> bool:
        return self.model in models.TRANSFER_MODELS

    @property
    def planned_epochs(self) -> int:
        """Epochs of both stages together (the head's and, with fine-tuning, the backbone's)."""
        return self.epochs + (self.fine_tune_epochs if self.fine_tune else 0)

    @property
    def pixel_scale(self) -> float:
        """What the pipeline multiplies raw pixels by before the model: 1, or 1/255 for the bug."""
        return 1.0 / 255.0 if self.input_scaling == "divide_by_255" else 1.0

    @property
    def model_input_size(self) -> int:
        return self.input_size if self.is_transfer else config.IMAGE_SIZE

    def build_model(self, weights: str | None = None):
        """The model this config trains (``weights`` overrides the config's: 'none' when only its shape
        and speed matter)."""
        return models.build_model(
            self.model,
            self.input_size,
            self.weights if weights is None else weights,
            self.interpolation,
            self.seed,
            self.compute_dtype,
            self.dropout,
            self.conv_filters,
            self.dense_units,
        )

    def uses_feature_cache(self) -> bool:
        return self.is_transfer and self.feature_cache and self.augment.is_identity

    def run_tag(self, weights_label: str) -> str:
        parts = []
        if self.is_transfer:
            parts.append(f"{self.input_size}px")
            parts.append(
                "imagenet"
                if weights_label.startswith("ImageNet")
                else ("random-init" if weights_label == models.NO_WEIGHTS_LABEL else "custom-weights")
            )
        if self.input_scaling == "divide_by_255":
            parts.append("div255")
        if self.fine_tune:
            parts.append("ft")
        if self.compute_dtype == "bfloat16":
            parts.append("bf16")
        return "-".join(parts)


def parse_filters(value: str | list | tuple) -> tuple[int, ...]:
    """'16,64,128' or [16, 64, 128] → (16, 64, 128); a clear error for anything else."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(int(str(v).strip()) for v in items)
    except ValueError:
        raise ValueError(
            f"conv filters must be three whole numbers such as 16,64,128, got {value!r}"
        ) from None


def parse_names(value: str | list | tuple) -> tuple[str, ...]:
    """'a,b' or ['a', 'b'] → ('a', 'b'): run names, blanks left out."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(v).strip() for v in items if str(v).strip())
