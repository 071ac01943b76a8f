"""``TuneConfig``: the settings of one search (which study, which model, how many trials, on what data,
which pruner, how many workers, how the space is narrowed), with a JSON round-trip. The command line and
the page produce this one object; each trial turns it into a ``TrainConfig``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fashion_lib import config, files, models
from fashion_lib.training.config import TrainConfig
from fashion_lib.tuning import space as spaces
from fashion_lib.tuning.storage import check_study_name

PRUNERS = ("median", "halving", "none")
FINAL_VAL_FRACTION = 0.05  # as the shipped models: 57,000 images train, 3,000 validate
# the final model's epochs by default (the Tuning page: or the study's own epochs, if more), and what
# bench.tuning retrains with: on the full training set its winners ran 14–20 epochs before early stopping
FINAL_EPOCHS = 20
MAX_WORKERS = 8


# training settings a search owns: a trial must not change them through ``fixed``
SEARCH_OWNED = frozenset(
    {
        "model",
        "subset",
        "test_subset",
        "epochs",
        "val_fraction",
        "seed",
        "evaluate_test",
        "temperature_scaling",
    }
)


# training settings a search parameter makes (``space.to_config``): fixing the setting itself did nothing
SET_BY_SEARCH = {"conv_filters": ("filters1", "filters2", "filters3"), "augment": ("augment_strength",)}


@dataclass(frozen=True)
class TuneConfig:
    study: str
    model: str = models.BASELINE
    trials: int = 20
    timeout: float = 0.0  # seconds after which no new trial starts; 0 = no limit
    subset: int = 10000  # balanced training images, split again into train/validation (never the test set)
    epochs: int = 5
    val_fraction: float = 0.2  # 2,000 of 10,000: differences of a point are not noise
    pruner: str = "median"
    workers: int = 1
    seed: int = 42
    defaults_first: bool = True  # a new study's trial 0 is the default configuration: the reference
    fixed: dict[str, Any] = field(default_factory=dict)  # search parameters or training settings, fixed
    ranges: dict[str, Any] = field(default_factory=dict)  # search parameters: [low, high] or choices

    def __post_init__(self) -> None:
        config.check_types(self, "tuning settings")
        problems = []
        try:
            check_study_name(self.study)
        except ValueError as exc:
            problems.append(str(exc))
        if self.model not in models.MODEL_NAMES:
            problems.append(f"model must be one of {', '.join(models.MODEL_NAMES)}")
        if self.trials < 1:
            problems.append("trials must be at least 1")
        if not (math.isfinite(self.timeout) and self.timeout >= 0):  # NaN was stored, and meant no limit
            problems.append("timeout must be 0 (none) or a number of seconds")
        if not (self.subset == 0 or 200 <= self.subset <= 60000):
            problems.append(f"subset must be 0 (all) or 200–60000 images, got {self.subset}")
        if self.epochs < 1:
            problems.append("epochs must be at least 1")
        if self.pruner not in PRUNERS:
            problems.append(f"pruner must be one of {', '.join(PRUNERS)}")
        if not 0 <= self.seed < 2**32:
            problems.append(f"seed must be 0–{2**32 - 1}, got {self.seed}")
        if not 1 <= self.workers <= MAX_WORKERS:
            problems.append(f"workers must be 1–{MAX_WORKERS}")
        declared = spaces.default_space(self.model) if self.model in models.MODEL_NAMES else ()
        searched = {p.name for p in declared}
        # a fix of a setting the search makes: the trials took the searched value, the study kept the fix
        for setting, params in SET_BY_SEARCH.items():
            if setting in self.fixed and searched & set(params):
                problems.append(
                    f"{setting} cannot be fixed: the search sets it through {', '.join(params)}; fix "
                    + ("that" if len(params) == 1 else "those")
                    + " instead"
                )
        owned = sorted(set(self.fixed) & SEARCH_OWNED)
        if owned:
            problems.append(
                f"{', '.join(owned)} cannot be fixed: the search itself sets "
                + ("it" if len(owned) == 1 else "them")
                + " (its model, images, split, seed and epochs are the study's own settings; trials are"
                " never evaluated on the test set nor calibrated)"
            )
        if problems:
            raise ValueError("invalid tuning settings: " + "; ".join(problems))
        self.space()  # unknown or widened parameters fail here, with the study's settings
        self.trial_config({p.name: p.value if p.kind == spaces.FIXED else _sample(p) for p in self.space()})

    def space(self) -> tuple[spaces.Param, ...]:
        """The space searched: the model's declared space, narrowed by ``fixed`` and ``ranges``."""
        declared = spaces.default_space(self.model)
        names = {p.name for p in declared}
        return spaces.narrow(declared, {k: v for k, v in self.fixed.items() if k in names}, self.ranges)

    def base_config(self) -> TrainConfig:
        """What every trial shares: the data budget, no test-set evaluation, no calibration, and the fixed
        training settings that are not search parameters (e.g. ``optimizer``)."""
        searched = {p.name for p in spaces.default_space(self.model)}
        values: dict[str, Any] = {
            "model": self.model,
            "subset": self.subset,
            "epochs": self.epochs,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "evaluate_test": False,
            "temperature_scaling": False,
        }
        if self.model in models.TRANSFER_MODELS:
            values.update(weights="imagenet", fine_tune=True, fine_tune_epochs=2)
        values.update({k: v for k, v in self.fixed.items() if k not in searched})
        return TrainConfig.from_dict({**TrainConfig().to_dict(), **values})

    def default_values(self) -> dict[str, Any]:
        """The searched parameters' values in the default configuration (those the space allows)."""
        return spaces.values_of(self.base_config(), self.space())

    def defaults_reference(self) -> dict[str, Any] | None:
        """Trial 0's values: the default configuration, when the (narrowed) space holds all of it; None
        when a narrowed range or choice list leaves a default out (it would not be the defaults)."""
        values = self.default_values()
        searched = {p.name for p in self.space() if p.kind != spaces.FIXED}
        return values if set(values) == searched else None

    def training_fixed(self) -> dict[str, Any]:
        """The fixed settings that are not search parameters (``optimizer``, ``fine_tune_epochs``, …)."""
        searched = {p.name for p in spaces.default_space(self.model)}
        return {k: v for k, v in self.fixed.items() if k not in searched}

    def budget_change(self, earlier: TuneConfig) -> str | None:
        """Why these settings cannot add trials to a study searched with ``earlier`` (a different data
        budget or fixed training setting makes the trials incomparable: other images, split, epochs or
        training), or None. Search parameters may be narrowed or fixed differently."""
        fields = {
            "subset": "images per trial",
            "epochs": "epochs",
            "val_fraction": "validation share",
            "seed": "seed",
        }
        changed = [
            f"{label} {getattr(earlier, name)} (now {getattr(self, name)})"
            for name, label in fields.items()
            if getattr(earlier, name) != getattr(self, name)
        ]
        before, now = earlier.base_config().to_dict(), self.base_config().to_dict()  # as the trials train
        changed += [
            f"{name} {before.get(name)} (now {now.get(name)})"
            for name in sorted(set(earlier.training_fixed()) | set(self.training_fixed()))
            if before.get(name) != now.get(name)
        ]
        if not changed:
            return None
        return (
            f"study '{self.study}' was searched with other settings — {', '.join(changed)}: its trials would "
            "not be comparable. Use the same settings to add trials, or another study name."
        )

    def trial_config(self, params: dict[str, Any]) -> TrainConfig:
        return spaces.to_config(self.base_config(), params)

    def final_config(self, params: dict[str, Any], epochs: int) -> TrainConfig:
        """The winner trained for real: the full training set less the shipped models' small validation
        share (``FINAL_VAL_FRACTION``: its curve, early stopping and calibration), evaluated on the test
        set, calibrated. Not the trials' validation share: a fifth of the data held out would cost the
        final model accuracy for a validation figure nobody compares any more."""
        trial = self.trial_config(params)
        return TrainConfig.from_dict(
            {
                **trial.to_dict(),
                "subset": 0,
                "epochs": epochs,
                "val_fraction": FINAL_VAL_FRACTION,
                "evaluate_test": True,
                "temperature_scaling": True,
            }
        )

    # -- JSON round-trip
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TuneConfig:
        """Stored settings (a study's, a queued job's): their ranges are fitted into today's declared
        space (``spaces.fit_stored_ranges``), and what earlier versions stored that is refused now is read
        as the trials ran (``_as_trials_ran``); settings given now (``TuneConfig(...)``) are checked as
        given."""
        ranges, model = values.get("ranges"), values.get("model", models.BASELINE)
        if isinstance(ranges, dict) and model in models.MODEL_NAMES:
            values = {**values, "ranges": spaces.fit_stored_ranges(spaces.default_space(model), ranges)}
        values = _as_trials_ran(values, model)
        fixed = values.get("fixed")
        if isinstance(fixed, dict) and set(fixed) & SEARCH_OWNED:
            # stored before such fixes were refused: the search's own settings as the trials trained with
            # them (its images, split, seed, epochs); the rest (model, test set) never belonged to a trial
            owned = {k: fixed[k] for k in ("subset", "epochs", "val_fraction", "seed") if k in fixed}
            values = {**values, **owned, "fixed": {k: v for k, v in fixed.items() if k not in SEARCH_OWNED}}
        return config.dataclass_from_dict(cls, values, "tuning settings")

    @classmethod
    def from_file(cls, path: Path) -> TuneConfig:
        try:
            values = files.parse_json(files.read_bytes(path))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not readable tuning settings ({exc})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} is not a JSON object")
        return cls.from_dict(values)


def _as_trials_ran(values: dict[str, Any], model: str) -> dict[str, Any]:
    """Stored settings that earlier versions accepted and these refuse, read as the trials ran: a fix of a
    setting the search makes (``SET_BY_SEARCH``) or a fixed value outside today's space never reached a
    trial the way it reads, so it is dropped; a NaN or infinite timeout meant no limit; a whole number
    stored as a float is that number."""
    values = dict(values)
    timeout = values.get("timeout")
    if isinstance(timeout, float) and not math.isfinite(timeout):
        values["timeout"] = 0.0
    for name in ("trials", "subset", "epochs", "workers", "seed"):
        if isinstance(values.get(name), float) and values[name].is_integer():
            values[name] = int(values[name])
    fixed = values.get("fixed")
    if isinstance(fixed, dict) and model in models.MODEL_NAMES:
        declared = {p.name: p for p in spaces.default_space(model)}
        made = {setting for setting, params in SET_BY_SEARCH.items() if set(params) & set(declared)}
        kept = {}
        for name, value in fixed.items():
            if name in made:
                continue
            if name in declared:
                try:
                    spaces.narrow((declared[name],), {name: value})
                except ValueError:
                    continue
            kept[name] = value
        values["fixed"] = kept
    return values


def _sample(param: spaces.Param) -> Any:
    """A value inside the parameter's space, to check that every trial's config will be valid."""
    return param.choices[0] if param.kind == spaces.CATEGORICAL else param.low
