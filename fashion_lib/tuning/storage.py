"""Where studies live: an SQLAlchemy database URL, SQLite under ``$FASHION_HOME/tuning`` by default
(embedded, nothing to start) or any server database through ``FASHION_TUNING_DB`` — PostgreSQL when several
machines share one study. Every failure to reach or read it becomes a ``TuningStoreError`` whose message says
what is wrong and what to do."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashion_lib import config

SQLITE_WAIT_S = 60  # how long a worker waits for SQLite's write lock before giving up
READ_WAIT_S = 5  # … and a page or a listing, which a person waits for
HEARTBEAT_S = 10  # a running trial's worker writes a heartbeat this often …
GRACE_FACTOR = 3  # … and a trial silent for this many beats has lost its worker: it is marked failed
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class TuningStoreError(Exception):
    """The study database cannot be used (damaged, locked, unreachable) or has no such study."""


storage_url = config.tuning_db_url
redacted = config.redacted_url


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during."""
    seen = [exc]
    while (nxt := seen[-1].__cause__ or seen[-1].__context__) is not None and nxt not in seen:
        seen.append(nxt)
    return seen


def _explain(exc: Exception, url: str) -> TuningStoreError:
    text = " ".join(str(e) for e in _chain(exc)).lower()  # Optuna wraps SQLite's "database is locked"
    where = redacted(url)
    import optuna

    if "database is locked" in text:  # before Optuna's own words, which blame the data
        return TuningStoreError(
            f"The tuning database {where} is locked by another program; try again in a moment."
        )
    if isinstance(exc, AssertionError | TypeError):
        return TuningStoreError(  # Optuna's checks on rows written by hand or by another program
            f"The tuning database {where} holds a damaged record ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'a trial value is missing'}). Move it away, or set "
            "FASHION_TUNING_DB to another database."
        )
    if isinstance(exc, optuna.exceptions.StorageInternalError):  # Optuna's words blame the data, not the file
        return TuningStoreError(
            f"The tuning database {where} failed while a search wrote to it: it may have been damaged or "
            "replaced meanwhile. Check it with `python -m fashion_lib studies`; move it away or set "
            "FASHION_TUNING_DB to another database if it is damaged."
        )
    if isinstance(exc, json.JSONDecodeError):  # a record written by hand or by another program
        return TuningStoreError(
            f"The tuning database {where} holds a damaged record (not JSON: {exc}). Move it away, or set "
            "FASHION_TUNING_DB to another database."
        )
    if "file is not a database" in text or "malformed" in text or "no such table" in text:
        advice = (
            "is damaged (not an Optuna study database). Move it away, or set FASHION_TUNING_DB to another"
        )
        return TuningStoreError(f"The tuning database {where} {advice} database.")
    if "locked" in text:
        return TuningStoreError(
            f"The tuning database {where} is locked by another program; try again in a moment."
        )
    if "could not connect" in text or "connection refused" in text or "unable to open" in text:
        return TuningStoreError(
            f"Cannot reach the tuning database {where}: is the server running and the address right?"
        )
    if "no module named 'psycopg'" in text:  # SQLAlchemy's postgresql:// means psycopg 3, not installed
        return TuningStoreError(
            f"The driver for {where} is not installed: write the URL as postgresql+psycopg2://… (psycopg2, "
            "installed with the app), or pip install psycopg"
        )
    if isinstance(exc, ImportError | ModuleNotFoundError) or "no module named" in text:
        return TuningStoreError(
            f"The driver for {where} is not installed ({exc}); for PostgreSQL: pip install psycopg2-binary"
        )
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # not SQL and links after it
    return TuningStoreError(f"The tuning database {where} cannot be used: {first}")


@dataclass(frozen=True)
class Store:
    """An open study database."""

    url: str
    storage: Any  # optuna.storages.RDBStorage


def open_store(url: str | None = None, heartbeat: int = HEARTBEAT_S, wait_s: float | None = None) -> Store:
    """Connect to the study database (creating the SQLite file and its tables when new). ``wait_s``: how
    long a call waits for SQLite's lock (a search's, at most ``SQLITE_WAIT_S``; a page's, ``READ_WAIT_S``)."""
    import optuna
    import sqlalchemy.exc

    url = url or storage_url()
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TuningStoreError(
                f"Cannot make the folder of the tuning database {redacted(url)} ({exc.strerror or exc}): is "
                "something else there, or is it not writable? Move it away, or set FASHION_TUNING_DB."
            ) from None
        if path.is_dir():
            raise TuningStoreError(
                f"The tuning database {redacted(url)} is a folder, not a database file: move it away, or set "
                "FASHION_TUNING_DB to another file."
            )
        engine_kwargs: dict[str, Any] = {
            "connect_args": {"timeout": SQLITE_WAIT_S if wait_s is None else wait_s}
        }
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat,
                grace_period=heartbeat * GRACE_FACTOR,
            )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, OSError, RuntimeError) as exc:
        raise _explain(exc, url) from None
    return Store(url, storage)


def guarded(store: Store, action, *args, **kwargs):
    """Run ``action`` (an Optuna call on the store), turning database errors into TuningStoreError."""
    import optuna
    import sqlalchemy.exc

    try:
        return action(*args, **kwargs)
    except (
        sqlalchemy.exc.SQLAlchemyError,
        optuna.exceptions.StorageInternalError,
        OSError,
        json.JSONDecodeError,
    ) as exc:
        raise _explain(exc, store.url) from None
    except (AssertionError, TypeError) as exc:  # Optuna's checks on a row written by hand: a NULL value
        if not _raised_in_optuna(exc):
            raise  # the app's own mistake: not the database's, which must not be moved away for it
        raise _explain(exc, store.url) from None


def _raised_in_optuna(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside Optuna's own code (its innermost frame)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "optuna" in Path(tb.tb_frame.f_code.co_filename).parts


def load_study(store: Store, name: str, pruner=None, sampler=None):
    """The study ``name``; TuningStoreError naming the studies there when it does not exist."""
    import optuna

    try:
        study = guarded(
            store, optuna.load_study, study_name=name, storage=store.storage, pruner=pruner, sampler=sampler
        )
    except KeyError:
        names = study_names(store)
        known = f" Studies there: {', '.join(names)}." if names else " It holds no study yet."
        raise TuningStoreError(f"No study named '{name}' in {redacted(store.url)}.{known}") from None
    except ValueError as exc:  # Optuna refuses to load a multi-objective study without its directions
        raise TuningStoreError(f"Study '{name}' cannot be read as a study of this app ({exc}).") from None
    if len(study.directions) != 1:  # another program's: every reader here wants one validation accuracy
        raise TuningStoreError(
            f"Study '{name}' has {len(study.directions)} objectives: it was not made by this app, whose "
            "studies maximise one validation accuracy. Pick another study."
        )
    return study


def study_names(store: Store) -> list[str]:
    import optuna

    try:
        return sorted(guarded(store, optuna.get_all_study_names, store.storage))
    except TuningStoreError:  # Optuna reads every study's attributes for their names: one damaged is enough
        return _names_from_table(store)


def _names_from_table(store: Store) -> list[str]:
    """The study names as the database's ``studies`` table holds them (Optuna's own schema), read without
    the records Optuna parses with them; TuningStoreError when even that fails."""
    import sqlalchemy

    try:
        with store.storage.engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text("SELECT study_name FROM studies"))
            return sorted(str(row[0]) for row in rows)
    except (sqlalchemy.exc.SQLAlchemyError, AttributeError) as exc:
        raise _explain(exc, store.url) from None


@dataclass(frozen=True)
class StudySummary:
    name: str
    trials: int | None  # None: its trials cannot be read (a damaged record)
    best_value: float | None
    best_trial: int | None
    model: str | None
    started: Any


def study_summaries(store: Store) -> list[StudySummary]:
    """Every study in the database, with its trial count and best value (newest first)."""
    import optuna

    found = []
    try:
        summaries = guarded(store, optuna.get_all_study_summaries, store.storage, include_best_trial=True)
    except TuningStoreError:  # one study's damaged record must not hide every study: each on its own
        return sorted(
            (_summary_of(store, name) for name in study_names(store)),
            key=lambda x: (x.started is not None, x.started),
            reverse=True,
        )
    for s in summaries:
        best = s.best_trial
        found.append(
            StudySummary(
                s.study_name,
                s.n_trials,
                best.value if best is not None else None,
                best.number if best is not None else None,
                s.user_attrs.get("model"),
                s.datetime_start,
            )
        )
    return sorted(found, key=lambda x: (x.started is not None, x.started), reverse=True)  # unstarted last


def _summary_of(store: Store, name: str) -> StudySummary:
    """One study's summary, read on its own; what cannot be read of it unknown (None)."""
    import optuna

    try:
        study = guarded(store, optuna.load_study, study_name=name, storage=store.storage)
        model = guarded(store, lambda: study.user_attrs.get("model"))
    except TuningStoreError:  # its own record is damaged (an attribute that is not JSON)
        return StudySummary(name, None, None, None, None, None)
    try:
        trials = guarded(store, study.get_trials, deepcopy=False)
    except TuningStoreError:
        return StudySummary(name, None, None, None, model, None)
    done = [t for t in trials if t.state.name == "COMPLETE" and t.values is not None and len(t.values) == 1]
    pick = min if study.directions[0].name == "MINIMIZE" else max  # Optuna's best, by the direction
    best = pick(done, key=lambda t: t.value) if done and len(study.directions) == 1 else None
    started = min((t.datetime_start for t in trials if t.datetime_start), default=None)
    return StudySummary(
        name, len(trials), best.value if best else None, best.number if best else None, model, started
    )


def check_study_name(name: str) -> str:
    if not STUDY_NAME.match(name or ""):
        raise ValueError(
            f"study name '{name}' must be 1–64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name
