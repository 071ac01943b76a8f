"""Search spaces, declared once as data: what the tuner may change, in which range, and how a set of
values becomes a ``TrainConfig``. The page shows these tables; the command line and the page narrow them
(fix a parameter, change a range or the choices) into the space a study actually searched."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from fashion_lib import augment, models
from fashion_lib.training.config import TrainConfig

FLOAT, INT, CATEGORICAL, FIXED = "float", "int", "categorical", "fixed"


@dataclass(frozen=True)
class Param:
    """One searchable setting: a float or int range (optionally log-scaled), a set of choices, or fixed."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    value: Any = None  # the value of a fixed parameter
    help: str = ""

    def suggest(self, trial) -> Any:
        if self.kind == FLOAT:
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == INT:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        if self.kind == CATEGORICAL:
            return trial.suggest_categorical(self.name, list(self.choices))
        return self.value

    def describe(self) -> str:
        """'1e-04 … 0.01 (log)', 'one of 64, 128, 256', 'fixed at 0.2'."""
        if self.kind in (FLOAT, INT):
            return f"{self.low:g} … {self.high:g}" + (" (log scale)" if self.log else "")
        if self.kind == CATEGORICAL:
            return "one of " + ", ".join(str(c) for c in self.choices)
        return f"fixed at {self.value}"

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["choices"] = list(self.choices)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Param:
        return cls(**{**values, "choices": tuple(values.get("choices", ()))})


# The augmentation strength searched stops at 0.3 of the scale (``augment.of_strength``). In three 20–40
# trial studies searched over 0–1 (10,000 and 20,000 images, 12–15 epochs; one sampler seed, so their random
# starts drew the same points), 29 of 80 trials went above 0.3: 18 were pruned and none of the other 11
# completed above the median of the rest, and the searches stayed near the default configuration. Over
# 0–0.3, studies with three seeds found parameters that, retrained, beat the defaults by 0.11–1.15 points
# (README, bench.tuning).
AUGMENT_STRENGTH_MAX = 0.3

BASELINE_SPACE: tuple[Param, ...] = (
    Param("learning_rate", FLOAT, 1e-4, 1e-2, log=True, help="Adam's step size"),
    Param("lr_schedule", CATEGORICAL, choices=("cosine", "plateau", "constant"), help="how it decays"),
    Param("label_smoothing", FLOAT, 0.0, 0.2, help="share of each target spread over all classes"),
    Param("dropout", FLOAT, 0.1, 0.5, help="before the hidden and the output layer"),
    Param("filters1", CATEGORICAL, choices=(8, 16, 32), help="filters of the first convolution (28×28)"),
    Param("filters2", CATEGORICAL, choices=(32, 64, 96), help="filters of the second convolution (14×14)"),
    Param("filters3", CATEGORICAL, choices=(64, 128, 192), help="filters of the third convolution (7×7)"),
    Param("dense_units", CATEGORICAL, choices=(64, 128, 256), help="units of the hidden dense layer"),
    Param("batch_size", CATEGORICAL, choices=(64, 128, 256), help="images per step"),
    Param(
        "augment_strength",
        FLOAT,
        0.0,
        AUGMENT_STRENGTH_MAX,
        help=f"0 = none; {AUGMENT_STRENGTH_MAX:g} = {augment.of_strength(AUGMENT_STRENGTH_MAX).describe()}",
    ),
)
TRANSFER_SPACE: tuple[Param, ...] = (
    Param("learning_rate", FLOAT, 1e-4, 1e-2, log=True, help="the head's step size (stage 1)"),
    Param("dropout", FLOAT, 0.1, 0.5, help="before the output layer"),
    Param("fine_tune_layers", INT, 10, 100, help="top backbone layers unfrozen in stage 2"),
    Param("fine_tune_learning_rate", FLOAT, 1e-5, 1e-3, log=True, help="step size while fine-tuning"),
    Param("input_size", CATEGORICAL, choices=(64, 96, 128), help="pixels the 28×28 input is resized to"),
)


def default_space(model: str) -> tuple[Param, ...]:
    if model not in models.MODEL_NAMES:
        raise ValueError(f"model must be one of {', '.join(models.MODEL_NAMES)}, got '{model}'")
    return BASELINE_SPACE if model == models.BASELINE else TRANSFER_SPACE


def _number(param: Param, text: Any) -> float | int:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{param.name}: '{text}' is not a number") from None
    integral = param.kind == INT or (bool(param.choices) and isinstance(param.choices[0], int))
    return int(value) if integral else value


def _choice(param: Param, text: Any) -> Any:
    """A value given as text, turned into the type of the parameter's choices."""
    if isinstance(text, str) and param.choices and not isinstance(param.choices[0], str):
        return _number(param, text)
    return text


def narrow(
    space: tuple[Param, ...],
    fixed: dict[str, Any] | None = None,
    ranges: dict[str, Any] | None = None,
) -> tuple[Param, ...]:
    """The space with some parameters fixed (``{"dropout": 0.2}``) and some ranges or choices changed
    (``{"learning_rate": [1e-3, 5e-3]}``, ``{"batch_size": [64, 128]}``). Names not in the space raise
    ValueError; so do ranges and fixed values outside the declared ones (narrowing never widens the
    search)."""
    by_name = {p.name: p for p in space}
    for name in [*(fixed or {}), *(ranges or {})]:
        if name not in by_name:
            raise ValueError(f"'{name}' is not a parameter of this search space ({', '.join(by_name)})")
    out = []
    for param in space:
        if fixed and param.name in fixed:
            value = fixed[param.name]
            if param.kind == CATEGORICAL:
                value = _choice(param, value)
                if value not in param.choices:  # batch 7 trained trial 0 as "the default settings"
                    raise ValueError(f"{param.name}: fix it at one of {', '.join(map(str, param.choices))}")
            elif param.kind in (FLOAT, INT):
                value = _number(param, value)
                if not param.low <= value <= param.high:
                    raise ValueError(f"{param.name}: fix it within {param.low:g} … {param.high:g}")
            out.append(replace(param, kind=FIXED, value=value))
        elif ranges and param.name in ranges:
            out.append(_narrowed(param, ranges[param.name]))
        else:
            out.append(param)
    return tuple(out)


def _given_values(given: Any) -> list[Any]:
    """A range or choice list as given: a list, or text such as '0.001:0.005' or '64,128'."""
    return list(given) if isinstance(given, list | tuple) else str(given).replace(":", ",").split(",")


def _narrowed(param: Param, given: Any) -> Param:
    values = _given_values(given)
    if param.kind == CATEGORICAL:
        given_choices = [_choice(param, v) for v in values]
        unknown = [c for c in given_choices if c not in param.choices]
        if unknown or not given_choices:
            raise ValueError(f"{param.name}: choose among {', '.join(map(str, param.choices))}")
        # in the declared order, whatever order they were typed in: a study compares choice lists as lists
        choices = tuple(c for c in param.choices if c in given_choices)
        if len(choices) == 1:  # one choice is a fixed value (Optuna would store a one-choice list)
            return replace(param, kind=FIXED, value=choices[0])
        return replace(param, choices=choices)
    if len(values) != 2:
        raise ValueError(f"{param.name}: give a range as low:high")
    low, high = (_number(param, v) for v in values)
    if not param.low <= low <= high <= param.high:
        raise ValueError(f"{param.name}: the range must lie within {param.low:g} … {param.high:g}")
    if low == high:
        return replace(param, kind=FIXED, value=low)
    return replace(param, low=low, high=high)


def fit_stored_ranges(space: tuple[Param, ...], ranges: dict[str, Any]) -> dict[str, Any]:
    """A stored study's ranges and choices, cut to what ``space`` declares now: a declared range can shrink
    between versions (the augmentation strength went from 0–1 to 0–0.3), and a study made before must
    still load and continue, searching what is still declared. Anything unreadable is left as it was
    (``narrow`` then says what is wrong)."""
    by_name = {p.name: p for p in space}
    fitted = dict(ranges)
    for name, given in ranges.items():
        param = by_name.get(name)
        if param is None:
            continue
        values = _given_values(given)
        try:
            if param.kind == CATEGORICAL:
                kept = [v for v in (_choice(param, v) for v in values) if v in param.choices]
                fitted[name] = kept or list(param.choices)
            elif len(values) == 2:
                low, high = (_number(param, v) for v in values)
                low, high = max(low, param.low), min(high, param.high)
                fitted[name] = [low, high] if low <= high else [param.low, param.high]
        except ValueError:
            continue
    return fitted


def suggest(trial, space: tuple[Param, ...]) -> dict[str, Any]:
    """One value per parameter: suggested by the trial, or the fixed value."""
    return {param.name: param.suggest(trial) for param in space}


def to_config(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """The training config of a trial: ``base`` with the searched values in their fields (three filter
    counts become ``conv_filters``; the augmentation strength becomes an ``AugmentConfig``)."""
    fields = dict(values)
    filters = [fields.pop(f"filters{i}", None) for i in (1, 2, 3)]
    if any(f is not None for f in filters):
        fields["conv_filters"] = tuple(
            f if f is not None else d for f, d in zip(filters, base.conv_filters, strict=True)
        )
    if "augment_strength" in fields:
        fields["augment"] = augment.of_strength(float(fields.pop("augment_strength")), seed=base.seed)
    return TrainConfig.from_dict({**base.to_dict(), **fields})


def values_of(cfg: TrainConfig, space: tuple[Param, ...]) -> dict[str, Any]:
    """The search values that reproduce ``cfg`` (``to_config``'s inverse) for the parameters ``space``
    searches. A value outside a narrowed range or choice list is left out (the sampler picks that one);
    so is an augmentation that no single strength reproduces."""
    dropout = cfg.dropout
    if dropout is None:
        dropout = models.BASELINE_DROPOUT if cfg.model == models.BASELINE else models.TRANSFER_DROPOUT
    known: dict[str, Any] = {
        "learning_rate": cfg.learning_rate,
        "lr_schedule": cfg.lr_schedule,
        "label_smoothing": cfg.label_smoothing,
        "dropout": dropout,
        **{f"filters{i}": f for i, f in enumerate(cfg.conv_filters, start=1)},
        "dense_units": cfg.dense_units,
        "batch_size": cfg.batch_size,
        "fine_tune_layers": cfg.fine_tune_layers,
        "fine_tune_learning_rate": cfg.fine_tune_learning_rate,
        "input_size": cfg.input_size,
    }
    if cfg.augment == augment.of_strength(0.0, seed=cfg.augment.seed):
        known["augment_strength"] = 0.0
    values = {}
    for param in space:
        value = known.get(param.name)
        if value is None or param.kind == FIXED:
            continue
        if param.kind == CATEGORICAL:
            inside = value in param.choices
        else:
            inside = param.low <= value <= param.high and (param.kind != INT or value == int(value))
        if inside:
            values[param.name] = value
    return values


def searched(space: tuple[Param, ...]) -> tuple[Param, ...]:
    """The space without its help texts: what two spaces are compared by (a reworded help is no change)."""
    return tuple(replace(p, help="") for p in space)


def space_to_json(space: tuple[Param, ...]) -> list[dict[str, Any]]:
    return [p.to_dict() for p in space]


def space_from_json(values: list[dict[str, Any]]) -> tuple[Param, ...]:
    return tuple(Param.from_dict(v) for v in values)


def editable_rows(space: tuple[Param, ...]) -> list[dict[str, Any]]:
    """The space as rows a person edits: leave both blank to search as declared, write a range
    ('0.001:0.005') or choices ('64,128') to narrow it, or a value to fix it."""
    return [
        {"parameter": p.name, "declared": p.describe(), "narrow to": "", "fix at": "", "what it is": p.help}
        for p in space
    ]


def narrowing_from_rows(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fixed, ranges) from edited rows (see ``editable_rows``)."""
    fixed, ranges = {}, {}
    for row in rows:
        name = str(row.get("parameter", ""))
        fix, narrow_to = str(row.get("fix at") or "").strip(), str(row.get("narrow to") or "").strip()
        if fix:
            fixed[name] = fix
        elif narrow_to:
            ranges[name] = narrow_to
    return fixed, ranges
