"""Running a search: a coordinator process and its workers.

``run_search`` (the ``tune`` command) is the coordinator: it creates or opens the study, fails trials whose
worker died (no heartbeat), hands out exactly as many trial tickets as asked for, starts ``workers``
processes (``python -m fashion_lib tune --worker``), prints one line per finished trial, and ends when they
do. Each worker takes a ticket, asks the study for parameters, trains one run through the ordinary engine
(on a stratified subset with a validation split, never the test set), reports validation accuracy after
every epoch so the pruner can stop a poor trial, and returns the final model's validation accuracy.

Every trial keeps its run folder (curves, model), named in the trial's ``run`` attribute and marked with a
``trial.json``. The same command on another machine with the same ``FASHION_TUNING_DB`` joins the study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fashion_lib import config, files, jobs, lifecycle, processes, runs
from fashion_lib.tuning import results
from fashion_lib.tuning import space as spaces
from fashion_lib.tuning.config import TuneConfig
from fashion_lib.tuning.storage import HEARTBEAT_S, Store, TuningStoreError, guarded, load_study, open_store

TICKETS_FILE = "tickets.json"
POLL_S = 1.0


# ----------------------------------------------------------------------------------------- the study


def pruning_warmup(epochs: int) -> int:
    """The first epoch after which the median pruner may stop a trial: the second, or a third of the way
    in for longer trials — a trial with strong augmentation or a small learning rate starts slower and
    was cut after epoch 2 of 10 before it could show what it reaches."""
    return max(2, math.ceil(epochs / 3))


def make_pruner(name: str, epochs: int):
    import optuna

    if name == "median":
        # once three trials have finished; never before the warm-up (one epoch says little)
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=pruning_warmup(epochs))
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(tc: TuneConfig, store: Store, create: bool, worker: int = 0):
    """The study, created when ``create`` and new; the sampler is seeded per worker."""
    import optuna

    if not create:
        study = load_study(store, tc.study, make_pruner(tc.pruner, tc.base_config().planned_epochs))
        # seeded by the study's trials too: a search that adds trials must not draw its predecessor's
        # random start again (the same seed repeated trials 1 and 2 as 3 and 4)
        done = len(guarded(store, study.get_trials, deepcopy=False))
        study.sampler = optuna.samplers.TPESampler(seed=tc.seed + worker + 7919 * done, n_startup_trials=5)
        return study
    sampler = optuna.samplers.TPESampler(seed=tc.seed + worker, n_startup_trials=5)
    study = guarded(
        store,
        optuna.create_study,
        study_name=tc.study,
        storage=store.storage,
        direction="maximize",
        load_if_exists=True,
        pruner=make_pruner(tc.pruner, tc.base_config().planned_epochs),
        sampler=sampler,
    )
    known = study.user_attrs.get("model")
    if known is not None and known != tc.model:
        raise ValueError(f"study '{tc.study}' searches {known}, not {tc.model}: pick another study name")
    if problem := results.settings_problem(study):
        raise ValueError(problem)
    earlier = results.settings_of(study)
    if earlier is not None and (change := tc.budget_change(earlier)):
        raise ValueError(change)
    if change := choices_change(study, tc.space()):
        raise ValueError(change)
    guarded(store, study.set_user_attr, "model", tc.model)
    space = tc.space()
    stored = results.space_of(study)
    # the trials so far searched another space: kept, so that the explorer says which trials searched what
    if stored and spaces.searched(stored) != spaces.searched(space):
        before = len(guarded(store, study.get_trials, deepcopy=False))
        history = [
            *results.earlier_spaces(study),
            {"before_trial": before, "space": spaces.space_to_json(stored)},
        ]
        guarded(store, study.set_user_attr, results.EARLIER_SPACES_ATTR, history)
    guarded(store, study.set_user_attr, "space", spaces.space_to_json(space))
    guarded(store, study.set_user_attr, "settings", tc.to_dict())
    reference = tc.defaults_reference()
    fail_stale(study)  # a defaults trial whose worker died is not one that will finish
    trials = guarded(store, study.get_trials, deepcopy=False)
    tried = [t for t in trials if t.user_attrs.get(results.DEFAULTS_ATTR)]
    lost = bool(tried) and all(_lost(t) for t in tried)
    same = lost and tried[-1].system_attrs.get("fixed_params") == reference  # not fixed elsewhere this time
    if tc.defaults_first and reference is not None and (not trials or same):
        # the reference every searched trial is measured against: same data, split, seed and budget; made
        # again when its trial failed or was stopped (no verdict against the defaults without it)
        guarded(store, study.enqueue_trial, reference, user_attrs={results.DEFAULTS_ATTR: True})
    return study


def _lost(trial) -> bool:
    """A defaults trial that will never give its value: failed, or stopped by a person (not pruned)."""
    return trial.state.name == "FAIL" or (
        trial.state.name == "PRUNED" and bool(trial.user_attrs.get(results.STOPPED_ATTR))
    )


def fail_stale(study) -> None:
    """Mark failed the running trials whose worker stopped writing heartbeats (it died): Optuna's check,
    which never raises here (a database problem shows up at the next real use)."""
    import optuna

    with contextlib.suppress(Exception), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def choices_change(study, space: tuple[spaces.Param, ...]) -> str | None:
    """Why ``space`` cannot search this study: Optuna keeps a categorical parameter's choices for the
    whole study (other choices fail every trial), or None. Ranges of numbers may change; a parameter may
    be fixed."""
    import optuna

    earlier = {}
    for trial in study.get_trials(deepcopy=False):
        for name, dist in trial.distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                earlier.setdefault(name, tuple(dist.choices))
    for param in space:
        if (
            param.kind == spaces.CATEGORICAL
            and param.name in earlier
            and earlier[param.name] != param.choices
        ):
            before = ", ".join(map(str, earlier[param.name]))
            return (
                f"study '{study.study_name}' searched {param.name} among {before}, and a study cannot change "
                f"its choices (Optuna's rule): search it among {before} again, fix it at one value, or use "
                "another study name"
            )
    return None


def continuing(store: Store, tc: TuneConfig) -> tuple[TuneConfig | None, str | None]:
    """Settings from the page for an existing study: the validation share and seed it was searched with
    (the page does not ask for them), or None and why the rest of the budget does not match."""
    try:
        study = load_study(store, tc.study)
        earlier = guarded(store, results.settings_of, study)
        problem = results.settings_problem(study)
        choices = guarded(store, choices_change, study, tc.space())
    except (TuningStoreError, ValueError) as exc:
        return None, str(exc)
    if problem or choices:
        return None, problem or choices
    if earlier is None:
        return tc, None
    # and its fixed training settings (the page has no field for them): only its search space is the page's
    fixed = {**earlier.training_fixed(), **tc.fixed}
    tc = dataclasses.replace(tc, val_fraction=earlier.val_fraction, seed=earlier.seed, fixed=fixed)
    change = tc.budget_change(earlier)
    return (None, change) if change else (tc, None)


# ------------------------------------------------------------------------------------------ tickets


def _tickets(folder: Path, take: bool) -> int:
    """Remaining tickets (taking one when ``take``): the file lock makes each ticket go to one worker."""
    path = folder / TICKETS_FILE
    with files.locked(folder / ".tickets.lock"):
        value = runs.read_json(path) or {}
        left = int(value.get("left", 0))
        deadline = value.get("deadline")
        if deadline and time.time() > deadline:
            left = 0
        if take and left > 0:
            left -= 1
            runs.write_json(path, {**value, "left": left})
            return left + 1
        return left


def take_ticket(folder: Path) -> bool:
    return _tickets(folder, take=True) > 0


# ------------------------------------------------------------------------------------------ a trial


class _Stop:
    """Set when the worker is asked to stop (SIGTERM): the current trial's run stops, no new one starts.
    ``parent_died``: the SIGTERM came because the coordinator died (``processes.die_with_parent``), not
    from a person's stop."""

    requested = False
    parent_died = False
    parent: int | None = None
    run_folder: Path | None = None


def _pruning_callback(trial, folder: Path, last_step: int):
    import keras

    class ReportAndPrune(keras.callbacks.Callback):
        """Reports validation accuracy after every epoch (stage 1 and 2 count on); stops a poor trial —
        but not after its last epoch, when the budget is spent anyway and the trial simply completes."""

        pruned_at: int | None = None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_accuracy")
            if value is None:
                return
            step = len(runs.read_metrics(folder))  # epochs finished in this run, stages together
            trial.report(float(value), step)
            if step < last_step and trial.should_prune():
                self.pruned_at = step
                lifecycle.request_stop(folder, f"pruned by the tuner after epoch {step}")
                self.model.stop_training = True

    return ReportAndPrune()


def objective_for(tc: TuneConfig, space: tuple[spaces.Param, ...], store: Store) -> Callable:
    def objective(trial) -> float:
        import optuna

        # Optuna's heartbeat thread writes its first beat beside this thread's writes and can lose the
        # race for SQLite's lock; a worker killed before that beat left a trial no stale check could ever
        # fail (it stayed "running"). The first beat is written here, before anything else of the trial.
        guarded(store, store.storage.record_heartbeat, trial._trial_id)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            return _train_trial(trial, tc, space)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # Optuna keeps no reason: the table and the progress line say it
            with contextlib.suppress(Exception):
                trial.set_user_attr(results.FAILED_ATTR, lifecycle.one_line(exc))
            raise

    return objective


def _train_trial(trial, tc: TuneConfig, space: tuple[spaces.Param, ...]) -> float:
    import optuna

    from fashion_lib.training import engine

    params = spaces.suggest(trial, space)
    trial.set_user_attr("params", params)  # Optuna's trial.params holds the searched ones only
    cfg = tc.trial_config(params)
    folder = engine.start_run(cfg)
    runs.write_json(folder / runs.TRIAL_FILE, {"study": tc.study, "number": trial.number})
    trial.set_user_attr("run", folder.name)
    callback = _pruning_callback(trial, folder, cfg.planned_epochs)
    _Stop.run_folder = folder
    if _Stop.requested:  # the stop came before this run existed: it stops at once
        lifecycle.request_stop(folder)
    try:
        engine.train(run_dir=folder, extra_callbacks=[callback], handle_sigterm=False)
    finally:
        _Stop.run_folder = None
    summary, _ = runs.read_summary(folder)
    if callback.pruned_at is not None:
        trial.set_user_attr("pruned_at_epoch", callback.pruned_at)
        raise optuna.TrialPruned(f"pruned after epoch {callback.pruned_at}")
    state = lifecycle.effective_state(folder)
    if state == lifecycle.STOPPED or (
        _Stop.requested and state not in (lifecycle.COMPLETED, lifecycle.FAILED)
    ):
        if _Stop.parent_died:
            raise RuntimeError("its search was killed (the coordinator died) before the trial finished")
        # the search was stopped, or just this trial's run (its Stop button): the worker goes on with
        # the next trial unless the whole search was asked to stop
        trial.set_user_attr(results.STOPPED_ATTR, True)
        raise optuna.TrialPruned("stopped by the user")
    if state == lifecycle.FAILED:
        raise RuntimeError(
            f"its run {folder.name} failed: {lifecycle.state_of(folder).error or 'see its log'}"
        )
    if summary is None or summary.validation_accuracy is None:
        raise RuntimeError(f"run {folder.name} wrote no validation accuracy")
    return summary.validation_accuracy


def run_worker(job: Path, index: int, heartbeat: int = HEARTBEAT_S, coordinator: int | None = None) -> int:
    """One worker: take tickets and run trials until none is left or a stop is requested.

    ``coordinator``: the pid of the search that started it. The kernel tells a worker of its coordinator's
    death only from the moment the worker asked to be told (``processes.die_with_parent``, just after the
    fork); a coordinator that died before then left an orphan, which this check stops before it takes a
    ticket."""
    import optuna

    _Stop.parent = coordinator or os.getppid()

    def on_sigterm(signum, frame):
        _Stop.requested = True
        _Stop.parent_died = _Stop.parent_died or os.getppid() != _Stop.parent  # orphaned: adopted by another
        if _Stop.run_folder is not None:
            lifecycle.request_stop(_Stop.run_folder)

    signal.signal(signal.SIGTERM, on_sigterm)
    if os.getppid() != _Stop.parent:
        print(f"worker {index}: its search (process {_Stop.parent}) has ended; no trial taken", flush=True)
        return 1
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tc = TuneConfig.from_file(job / runs.CONFIG_FILE)
    store = open_store(heartbeat=heartbeat)
    study = open_study(tc, store, create=False, worker=index)
    objective = objective_for(tc, tc.space(), store)
    while not _Stop.requested and take_ticket(job):
        guarded(store, study.optimize, objective, n_trials=1, catch=(Exception,))
    return 0


# -------------------------------------------------------------------------------------- coordinator


def _start_worker(job: Path, index: int, heartbeat: int) -> subprocess.Popen:
    """A worker process; its training output goes to ``worker-<index>.log`` in the job folder."""
    arguments = ["tune", "--worker", str(index), "--run-dir", str(job), "--heartbeat", str(heartbeat)]
    arguments += ["--coordinator", str(os.getpid())]
    return jobs.spawn(arguments, job / f"worker-{index}.log", preexec_fn=processes.die_with_parent)


def describe_trial(trial, best) -> str:
    """One progress line: trial, state, value, pruned at, time, best so far, parameters."""
    state = results.state_name(trial)
    value = f"{trial.value:.4f}" if trial.value is not None else "-"
    pruned = trial.user_attrs.get("pruned_at_epoch")
    took = (
        f"{(trial.datetime_complete - trial.datetime_start).total_seconds():.0f} s"
        if trial.datetime_complete and trial.datetime_start
        else "-"
    )
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    best_text = f"best {best.value:.4f} (trial {best.number})" if best is not None else "best -"
    return (
        f"trial {trial.number:>3}  {state:<8} value {value}"
        + (" (the default settings)" if trial.user_attrs.get(results.DEFAULTS_ATTR) else "")
        + (f" (pruned after epoch {pruned})" if pruned else "")
        + f"  {took:>6}  {best_text}  {params}"
        + (
            f"  — {trial.user_attrs[results.FAILED_ATTR]}"
            if trial.user_attrs.get(results.FAILED_ATTR)
            else ""
        )
    )


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _fail_trials_of(store: Store, study, worker_pid: int) -> list[int]:
    """Mark failed the running trials of a worker that died (its heartbeat would say so later)."""
    import optuna

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.user_attrs.get("worker") == f"{socket.gethostname()}:{worker_pid}":
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                reason = f"its worker (process {worker_pid}) ended before the trial did"
                guarded(
                    store, store.storage.set_trial_user_attr, trial._trial_id, results.FAILED_ATTR, reason
                )
                guarded(
                    store, store.storage.set_trial_state_values, trial._trial_id, optuna.trial.TrialState.FAIL
                )
                failed.append(trial.number)
    return failed


def run_search(
    tc: TuneConfig, job: Path, out: Callable[[str], None] = print, heartbeat: int = HEARTBEAT_S
) -> str:
    """Coordinate one search into the study (job folder ``job``); returns the job's final state."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stopping = {"asked": False}

    def on_sigterm(signum, frame):
        stopping["asked"] = True

    signal.signal(signal.SIGTERM, on_sigterm)  # first: a stop during the set-up ends the search cleanly
    store = open_store(heartbeat=heartbeat)
    # it fails the trials whose worker died since the last search
    study = guarded(store, open_study, tc, store, create=True)
    trials = guarded(store, study.get_trials, deepcopy=False)
    # waiting trials (the default settings, or left by a stopped search) run in this search: printed too
    first = min((t.number for t in trials if t.state.name == "WAITING"), default=len(trials))
    runs.write_json(
        job / TICKETS_FILE,
        {"left": tc.trials, "deadline": time.time() + tc.timeout if tc.timeout else None},
    )
    out(
        f"study '{tc.study}' ({tc.model}, {first} earlier trials): {tc.trials} trials, {tc.workers} "
        f"worker(s), pruner {tc.pruner}, {tc.subset or 60000} images × {tc.epochs} epochs"
        + (f", at most {tc.timeout:.0f} s" if tc.timeout else "")
    )
    has_defaults = any(
        t.user_attrs.get(results.DEFAULTS_ATTR) and t.state.name in ("COMPLETE", "WAITING", "RUNNING")
        for t in trials
    )
    if tc.defaults_first and tc.defaults_reference() is None and not has_defaults:
        out("no trial of the default settings: the narrowed search space leaves some of them out")
    if stopping["asked"] or lifecycle.stop_requested(job):
        out("stopped before any trial started")
        return lifecycle.STOPPED
    workers = [_start_worker(job, i, heartbeat) for i in range(tc.workers)]
    out(f"worker logs: {job}/worker-*.log")
    reported: set[int] = set()
    printed: set[int] = set()
    started = checked = time.monotonic()
    problems = []
    while True:
        if stopping["asked"]:
            for proc in workers:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            stopping["asked"] = False
            stopping["sent"] = True
        alive = [p for p in workers if p.poll() is None]
        for proc in workers:
            if proc.returncode not in (None, 0) and proc.pid not in reported:
                reported.add(proc.pid)
                failed = guarded(store, _fail_trials_of, store, study, proc.pid)
                problems.append(f"worker {proc.pid} ended with {_exit_text(proc.returncode)}")
                out(problems[-1] + (f"; its trial {failed} is marked failed" if failed else ""))
        if time.monotonic() - checked > heartbeat:  # a worker of an earlier search that died just before
            fail_stale(study)  # this one started was still within its grace period then
            checked = time.monotonic()
        guarded(store, _print_new, study, first, printed, out)
        if not alive:
            break
        time.sleep(POLL_S)
    fail_stale(study)
    guarded(store, _print_new, study, first, printed, out)
    best = guarded(store, results.best_trial, study)
    out(
        f"done in {time.monotonic() - started:.0f} s; "
        + (
            f"best trial {best.number}: validation accuracy {best.value:.4f}"
            if best
            else "no completed trial"
        )
    )
    verdict = guarded(store, results.against_defaults_text, study)
    if verdict:
        out(verdict)
    if stopping.get("sent"):
        return lifecycle.STOPPED
    ended = [t for t in guarded(store, study.get_trials, deepcopy=False) if t.number >= first]
    if ended and all(t.state.name == "FAIL" for t in ended):
        reason = next(
            (t.user_attrs[results.FAILED_ATTR] for t in ended if t.user_attrs.get(results.FAILED_ATTR)), None
        )
        problems.append("every trial failed" + (f": {reason}" if reason else " (see the worker logs)"))
    if problems:
        raise RuntimeError("; ".join(problems))
    return lifecycle.COMPLETED


def _print_new(study, first: int, printed: set[int], out: Callable[[str], None]) -> None:
    finished = [t for t in study.get_trials(deepcopy=False) if t.number >= first and t.state.is_finished()]
    best = results.best_trial(study)
    for trial in sorted(finished, key=lambda t: t.number):
        if trial.number not in printed:
            printed.add(trial.number)
            out(describe_trial(trial, best))


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


# ---------------------------------------------------------------------------------------- job folders


def jobs_root() -> Path:
    return config.fashion_home() / "tuning" / "jobs"


def create_job(tc: TuneConfig, owner=None) -> Path:
    """A tuning job's folder (settings, status 'queued'), like a run folder, under tuning/jobs."""
    return runs.create_run(tc.to_dict(), runs.new_run_id("tune", tc.study), jobs_root(), owner)


def list_jobs() -> list[tuple[Path, lifecycle.RunState]]:
    """Tuning jobs, newest first, with their effective state."""
    root = jobs_root()
    if not root.is_dir():
        return []
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)
    return [(f, lifecycle.state_of(f)) for f in folders]


def run_job(job: Path, me: processes.ProcessIdentity, out=print, heartbeat: int = HEARTBEAT_S) -> str:
    """Run the search of a job folder this process owns, moving it through its states."""
    with lifecycle.running(job, me):
        tc = TuneConfig.from_file(job / runs.CONFIG_FILE)
        state = run_search(tc, job, out, heartbeat)
    lifecycle.transition(job, state, by=me, finished=time.time())
    (job / lifecycle.STOP_FILE).unlink(missing_ok=True)
    return state


def study_of(job: Path) -> str | None:
    """The study a tuning job searches (from its settings)."""
    value = runs.read_json(job / runs.CONFIG_FILE) or {}
    return value.get("study") if isinstance(value.get("study"), str) else None
