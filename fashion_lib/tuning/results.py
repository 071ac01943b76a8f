"""What a study found, read from the database and the trials' run folders: the trial table, the best
parameters, the search space as the user defined it, and the figures (Optuna's own plotly figures plus
the pruning picture). Nothing here trains."""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

from fashion_lib import config, figures, runs
from fashion_lib.tuning import space as spaces
from fashion_lib.tuning.config import TuneConfig

STATE_NAMES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}


DEFAULTS_ATTR = "defaults"  # user attribute of the trial that tried the default configuration
STOPPED_ATTR = "stopped_by_user"  # a trial a person stopped: Optuna records it pruned
FAILED_ATTR = "failed_because"  # a failed trial's error, one line
# a trial failed with no error of its own: Optuna's heartbeat check failed it (its worker died), or it was
# failed from outside
NO_REASON = "its worker died (no heartbeat) or it was failed from outside; no error recorded"


def state_name(trial) -> str:
    """The trial's state as the page and the progress lines say it ('stopped' for one a person stopped)."""
    if trial.state.name == "PRUNED" and trial.user_attrs.get(STOPPED_ATTR):
        return "stopped"
    return STATE_NAMES.get(trial.state.name, trial.state.name.lower())


def study_rows(summaries) -> list[dict[str, Any]]:
    """One row per study (``storage.StudySummary``): name, model, trials, best value and its trial."""
    from fashion_lib import models

    return [
        {
            "study": s.name,
            "model": models.DISPLAY_NAMES.get(s.model, s.model or "?"),
            "trials": s.trials,
            "best validation accuracy": s.best_value,
            "best trial": s.best_trial,
        }
        for s in summaries
    ]


TRIAL_COLUMNS = (
    "trial",
    "state",
    "settings",
    "validation accuracy",
    "seconds",
    "pruned after epoch",
    "run",
    "why",
)


def trial_table(study) -> pd.DataFrame:
    """One row per trial: number, state, validation accuracy, every parameter, duration, the epoch it was
    pruned after, and its run (folder id)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append(
            {
                "trial": t.number,
                "state": state_name(t),
                "settings": "defaults" if t.user_attrs.get(DEFAULTS_ATTR) else "searched",
                "validation accuracy": t.value,
                **{name: value for name, value in t.params.items()},
                "seconds": duration,
                "pruned after epoch": t.user_attrs.get("pruned_at_epoch"),
                "run": t.user_attrs.get("run"),
                "why": (t.user_attrs.get(FAILED_ATTR) or NO_REASON) if t.state.name == "FAIL" else None,
            }
        )
    # a study with no trial yet (a search starting, or its process killed before the first) has the
    # columns too: the page and the command line read "state" of it
    table = pd.DataFrame(rows, columns=None if rows else TRIAL_COLUMNS)
    if "why" in table and table["why"].isna().all():
        table = table.drop(columns="why")
    return table


def against_defaults(study) -> tuple[float, float, int] | None:
    """(the default configuration's value, the best searched trial's value, its number), once both exist:
    did the search find better than the defaults on the same data and budget?"""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.value is not None]
    defaults = [t for t in done if t.user_attrs.get(DEFAULTS_ATTR)]
    searched = [t for t in done if not t.user_attrs.get(DEFAULTS_ATTR)]
    if not defaults or not searched:
        return None
    best = max(searched, key=lambda t: t.value)
    return defaults[0].value, best.value, best.number


def against_defaults_text(study) -> str | None:
    """One sentence on ``against_defaults`` for the page and the command line, or None."""
    from fashion_lib import wording

    found = against_defaults(study)
    if found is None:
        return None
    default, best, number = found
    gap = (best - default) * 100
    verdict = "better than" if gap > 0 else ("level with" if gap == 0 else "not better than")
    return (
        f"Best searched trial ({number}): {wording.percent(best)} validation accuracy, {verdict} the default "
        f"settings' {wording.percent(default)} on the same images and budget ({gap:+.2f} points)."
    )


def best_trial(study):
    """The completed trial with the highest validation accuracy, or None."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(done, key=lambda t: t.value) if done else None


def settings_of(study) -> TuneConfig | None:
    """The settings of the study's last search (None for a study made elsewhere, or whose settings cannot
    be read: ``settings_problem`` tells them apart)."""
    values = study.user_attrs.get("settings")
    try:
        return TuneConfig.from_dict(values) if isinstance(values, dict) else None
    except (ValueError, TypeError):
        return None


def settings_problem(study) -> str | None:
    """Why the study's stored settings cannot be read (None when they can, or when there are none: a study
    made elsewhere). A search must not add trials to such a study: its budget could not be compared."""
    values = study.user_attrs.get("settings")
    if values is None:
        return None
    try:
        TuneConfig.from_dict(values if isinstance(values, dict) else {})
    except (ValueError, TypeError) as exc:
        return (
            f"study '{study.study_name}' keeps settings this version cannot read ({exc}): its trials could "
            "not be compared with new ones; search into another study name"
        )
    return None if isinstance(values, dict) else f"study '{study.study_name}' keeps damaged settings"


def space_of(study) -> tuple[spaces.Param, ...]:
    """The search space as the user defined it (narrowed), stored with the study."""
    values = study.user_attrs.get("space")
    try:
        return spaces.space_from_json(values) if isinstance(values, list) else ()
    except (TypeError, ValueError):
        return ()


EARLIER_SPACES_ATTR = "earlier_spaces"  # [{"before_trial": N, "space": [...]}, ...], oldest first


def earlier_spaces(study) -> list[dict]:
    """The spaces earlier searches of the study searched, where a later one changed it (oldest first)."""
    values = study.user_attrs.get(EARLIER_SPACES_ATTR)
    return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def space_changes(study) -> list[str]:
    """One sentence per change of the searched space: which trials searched what before it changed."""
    out = []
    entries = earlier_spaces(study)
    if not entries:
        return out
    later_spaces = [e.get("space") for e in entries[1:]] + [study.user_attrs.get("space")]
    start = 0
    for entry, later in zip(entries, later_spaces, strict=True):
        try:
            before = int(entry["before_trial"])
            old = {p.name: p for p in spaces.space_from_json(entry["space"])}
            new = {p.name: p for p in spaces.space_from_json(later or [])}
        except (KeyError, TypeError, ValueError):
            continue
        differ = [
            f"{name} {p.describe()}"
            + (f" (from trial {before}: {new[name].describe()})" if name in new else "")
            for name, p in old.items()
            if name not in new or spaces.searched((new[name],)) != spaces.searched((p,))
        ]
        if differ and before > start:
            trials = f"trial {start}" if before - start == 1 else f"trials {start}–{before - 1}"
            out.append(f"{trials.capitalize()} searched another space: " + "; ".join(differ) + ".")
        start = before
    return out


def space_table(space: tuple[spaces.Param, ...]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"parameter": p.name, "searched": p.describe(), "what it is": p.help} for p in space]
    )


def curves(study) -> list[dict]:
    """Per trial: the validation accuracy it reported after each epoch (for the pruning picture)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.intermediate_values:
            steps = sorted(t.intermediate_values)
            out.append(
                {
                    "number": t.number,
                    "state": t.state.name,
                    "value": t.value,
                    "steps": steps,
                    "values": [t.intermediate_values[s] for s in steps],
                }
            )
    return out


CHART_NAMES = (
    "Optimization history",
    "Parallel coordinates",
    "Hyperparameter importances",
    "Slices",
    "Contour",
    "Intermediate values",
)  # the explorer's charts, in the order the page shows them


def state_counts(table) -> dict[str, int]:
    """Trials per state in a ``trial_table``: complete, pruned, and failed, stopped or still running."""
    counts = {state: int(n) for state, n in table["state"].value_counts().items()} if len(table) else {}
    return {
        "complete": counts.get("complete", 0),
        "pruned": counts.get("pruned", 0),
        "failed, stopped or running": sum(counts.get(s, 0) for s in ("failed", "stopped", "running")),
    }


def study_figures(study, contour_params: list[str] | None = None) -> dict[str, Any]:
    """The CHART_NAMES charts — optimization history, parallel coordinates, importances, slices, contour and
    the pruning picture: a plotly figure each, or a sentence saying why there is none yet."""
    import optuna
    import optuna.visualization as vis

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    searched = sorted({name for t in complete for name in t.params})
    out: dict[str, Any] = {}
    makers = {
        "Optimization history": lambda: vis.plot_optimization_history(study),
        "Parallel coordinates": lambda: vis.plot_parallel_coordinate(study),
        "Hyperparameter importances": lambda: vis.plot_param_importances(study),
        "Slices": lambda: vis.plot_slice(study),
        "Contour": lambda: vis.plot_contour(study, params=contour_params or searched[:2]),
    }
    needs = {"Hyperparameter importances": 2, "Contour": 2, "Parallel coordinates": 2}
    for name, make in makers.items():
        if len(complete) < needs.get(name, 1):
            n = needs.get(name, 1)
            out[name] = f"needs at least {n} completed trial{'s' if n != 1 else ''} ({len(complete)} so far)"
            continue
        if name == "Contour" and len(contour_params or searched[:2]) < 2:
            out[name] = "needs two searched parameters"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = make()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            out[name] = f"cannot be drawn yet ({exc})"
    picture = curves(study)
    out["Intermediate values"] = (
        figures.intermediate_values(picture) if picture else "no trial has finished an epoch yet"
    )
    return {name: out[name] for name in CHART_NAMES}


def final_params(study, number: int) -> dict[str, Any]:
    """Every parameter trial ``number`` trained with — the searched ones and the fixed ones (ValueError when
    there is no such trial)."""
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            recorded = t.user_attrs.get("params")
            if isinstance(recorded, dict):
                return {**recorded, **t.params}
            fixed = {p.name: p.value for p in space_of(study) if p.kind == spaces.FIXED}
            return {**fixed, **t.params}
    raise ValueError(f"study '{study.study_name}' has no trial {number}")


def run_of(trial_run: str | None):
    """A trial's run as the registry sees it (None when gone)."""
    folder = trial_run and config.runs_dir() / trial_run
    return runs.read_run(folder) if folder and folder.is_dir() else None
