"""The one state machine of a run (and of a tuning job): its states, who may move it where, and the
*effective* state, derived from its files and its process. Every caller — the command line, the pages, the
tuner — reads and changes state through this module, so no two places can disagree.

States stored in ``status.json``:

- ``queued``: created; a process owns it and waits for the machine (or has not started yet);
- ``running``: the owning process trains; ``stopping``: it was asked to stop and finishes the batch;
- ``stopped``, ``completed``, ``failed``: it ended (stopped by the user, finished, or with an error).

Derived, never stored: ``interrupted`` — the file says queued/running/stopping but the owning process is
gone (killed, or the machine restarted); ``damaged`` — ``status.json`` is unreadable.

Who may move a run:

- one owner at a time writes ``status.json``. A launcher (the Train page, the tuner) creates the run
  (``queued``) and hands it to the process it starts with a one-time token; that process claims it and owns
  it from then on, until the run ends;
- the owner moves ``queued → running → stopping → stopped | completed | failed`` (and ``queued → stopped``
  when stopped while waiting);
- anyone may take over a run nobody owns any more — ``interrupted``, ``stopped`` or ``failed`` — to resume
  it (``→ queued``), or to mark an interrupted queued run as stopped; ``completed`` is final.

Writes take a per-run lock, re-read the file, check the move, and replace the file atomically through a
uniquely named temporary file, so concurrent writers never lose an update.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashion_lib import files, schemas
from fashion_lib.processes import ProcessIdentity

STATUS_FILE = "status.json"
JOB_FILE = "job.json"
STOP_FILE = "STOP"
_LOCK_FILE = ".status.lock"

QUEUED, RUNNING, STOPPING = "queued", "running", "stopping"
STOPPED, COMPLETED, FAILED = "stopped", "completed", "failed"
INTERRUPTED, DAMAGED = "interrupted", "damaged"
STORED_STATES = (QUEUED, RUNNING, STOPPING, STOPPED, COMPLETED, FAILED)
ACTIVE_STATES = (QUEUED, RUNNING, STOPPING)  # a live (or starting) process owns the run
ENDED_STATES = (STOPPED, COMPLETED, FAILED)
STATES = (*STORED_STATES, INTERRUPTED, DAMAGED)

# Allowed moves from each effective state (None: the run does not exist yet).
MOVES: dict[str | None, tuple[str, ...]] = {
    None: (QUEUED,),
    QUEUED: (QUEUED, RUNNING, STOPPED, FAILED),  # queued → queued: the owner changes (hand-over, claim)
    RUNNING: (STOPPING, STOPPED, COMPLETED, FAILED),
    STOPPING: (STOPPED, COMPLETED, FAILED),
    STOPPED: (QUEUED,),  # resume: continue where it stopped
    FAILED: (QUEUED,),  # retry: continue from the last finished epoch
    INTERRUPTED: (QUEUED, STOPPED, FAILED),
    COMPLETED: (),  # final: train again as a new run
    DAMAGED: (),
}
RESUMABLE = (STOPPED, FAILED, INTERRUPTED)

LAUNCH_GRACE_S = 60.0  # a handed-over run whose process has not claimed it yet counts as starting


class RunStateError(Exception):
    """A move the state machine does not allow; the message says why and what to do instead."""


Owner = ProcessIdentity | str  # a process, or a hand-over token for the process about to start


def _owner_dict(owner: Owner) -> dict[str, Any]:
    return {"token": owner} if isinstance(owner, str) else owner.to_dict()


def _same_owner(stored: dict[str, Any] | None, owner: Owner) -> bool:
    if not stored:
        return False
    if isinstance(owner, str):
        return stored.get("token") == owner
    recorded = ProcessIdentity.from_dict(stored)
    return recorded is not None and recorded == owner


# ------------------------------------------------------------------------------------------- reading


def read_status(folder: Path) -> tuple[schemas.StatusFile | None, str | None]:
    """(the validated status, None) or (None, what is wrong with ``status.json``)."""
    return schemas.check(schemas.StatusFile, files.read_json(folder / STATUS_FILE), STATUS_FILE)


def read_job(folder: Path) -> schemas.JobFile | None:
    job, _ = schemas.check(schemas.JobFile, files.read_json(folder / JOB_FILE), JOB_FILE)
    return job


def stop_requested(folder: Path) -> bool:
    return (folder / STOP_FILE).exists()


@dataclass(frozen=True)
class RunState:
    """The effective state of a run and what it was derived from."""

    state: str
    stored: str | None  # what status.json says (None when it is unreadable)
    error: str | None = None  # the failure's one-line reason
    detail: str = ""  # why the effective state differs from the stored one, or what is wrong
    owner: ProcessIdentity | None = None  # the live process that owns the run, if any
    queued_at: float | None = None
    started: float | None = None
    finished: float | None = None

    @property
    def active(self) -> bool:
        """A live (or starting) process owns the run: it must not be resumed, deleted or restarted."""
        return self.state in ACTIVE_STATES

    @property
    def resumable(self) -> bool:
        return self.state in RESUMABLE


def owner_process(folder: Path, status: schemas.StatusFile) -> ProcessIdentity | None:
    """The process that owns the run: recorded in the status, or — while it has not claimed the run yet —
    the process its launcher recorded in job.json under the same token."""
    owner = status.owner or {}
    identity = ProcessIdentity.from_dict(owner)
    if identity is not None:
        return identity
    job = read_job(folder)
    if job is not None and owner.get("token") == job.token:
        return ProcessIdentity(job.pid, job.start_ticks, job.boot_id)
    return None


def derive(folder: Path, status: schemas.StatusFile | None, problem: str | None = None) -> RunState:
    """The effective state from a (validated) status and the owning process."""
    if status is None:
        return RunState(DAMAGED, None, detail=problem or f"{STATUS_FILE} is unreadable")
    base = {
        "stored": status.state,
        "error": status.error,
        "queued_at": status.queued_at,
        "started": status.started,
        "finished": status.finished,
    }
    if status.state not in ACTIVE_STATES:
        return RunState(status.state, **base)
    owner = owner_process(folder, status)
    if owner is None:
        launched = status.queued_at or status.updated or 0.0
        if time.time() - launched < LAUNCH_GRACE_S:
            return RunState(status.state, **base, detail="starting")
        return RunState(INTERRUPTED, **base, detail="its training process never started")
    if not owner.alive():
        return RunState(
            INTERRUPTED,
            **base,
            detail=f"its process (pid {owner.pid}) ended without finishing: killed, or the machine restarted",
        )
    state = STOPPING if status.state == RUNNING and stop_requested(folder) else status.state
    return RunState(state, **base, owner=owner)


def state_of(folder: Path) -> RunState:
    """The effective state of the run in ``folder``."""
    status, problem = read_status(folder)
    return derive(folder, status, problem)


def effective_state(folder: Path) -> str:
    return state_of(folder).state


# ------------------------------------------------------------------------------------------- writing


def _locked(folder: Path):
    return files.locked(folder / _LOCK_FILE)


def _check_move(folder: Path, current: RunState, new_state: str, by: Owner, stored_owner: dict | None):
    if new_state not in STORED_STATES:
        raise ValueError(f"unknown run state '{new_state}'")
    if current.state == DAMAGED:
        raise RunStateError(f"run {folder.name} is damaged ({current.detail}); it can only be deleted")
    if current.active and not _same_owner(stored_owner, by):
        who = f"process {current.owner.pid}" if current.owner else "the process being started for it"
        raise RunStateError(f"run {folder.name} is {current.state} and owned by {who}")
    if new_state not in MOVES[current.state]:
        if current.state == COMPLETED:
            raise RunStateError(
                f"run {folder.name} is completed and cannot be resumed; train again as a new run instead"
            )
        raise RunStateError(f"run {folder.name} cannot go from {current.state} to {new_state}")


def create(folder: Path, owner: Owner) -> dict[str, Any]:
    """Write the first status of a new run folder: queued, owned by ``owner``."""
    if (folder / STATUS_FILE).exists():
        raise RunStateError(f"{folder} already has a status")
    status = {"state": QUEUED, "owner": _owner_dict(owner), "queued_at": time.time(), "updated": time.time()}
    files.write_json(folder / STATUS_FILE, status)
    return status


def transition(folder: Path, new_state: str, by: Owner, **fields: Any) -> dict[str, Any]:
    """Move the run to ``new_state`` on behalf of ``by``, keeping earlier fields unless given.

    Raises RunStateError when the move is not allowed: another live process owns the run, or the state
    machine has no such move (a completed run is never resumed)."""
    with _locked(folder):
        status, problem = read_status(folder)
        current = derive(folder, status, problem)
        _check_move(folder, current, new_state, by, status.owner if status else None)
        value = status.model_dump() if status else {}
        if new_state == QUEUED and current.state != QUEUED:  # resumed: a new attempt
            for key in ("error", "finished"):
                value.pop(key, None)
            value["queued_at"] = time.time()
            (folder / STOP_FILE).unlink(missing_ok=True)  # an old stop request must not stop it
        value.update(fields, state=new_state, owner=_owner_dict(by), updated=time.time())
        files.write_json(folder / STATUS_FILE, value)
        return value


def hand_over(folder: Path, token: str, by: Owner) -> dict[str, Any]:
    """The launcher queues the run for a process it is about to start, which claims it with ``token``.

    Allowed for a run the launcher owns (just created) and for one nobody owns any more (resume)."""
    with _locked(folder):
        status, problem = read_status(folder)
        current = derive(folder, status, problem)
        _check_move(folder, current, QUEUED, by, status.owner if status else None)
        (folder / STOP_FILE).unlink(missing_ok=True)  # an old stop request must not stop the new attempt
        value = status.model_dump() if status else {}
        for key in ("error", "finished", "started"):
            value.pop(key, None)
        value.update(state=QUEUED, owner=_owner_dict(token), queued_at=time.time(), updated=time.time())
        files.write_json(folder / STATUS_FILE, value)
        return value


def claim(folder: Path, token: str, me: ProcessIdentity) -> dict[str, Any]:
    """The started process takes the run its launcher handed over with ``token``."""
    with _locked(folder):
        status, problem = read_status(folder)
        if status is None or status.state != QUEUED or (status.owner or {}).get("token") != token:
            raise RunStateError(
                f"run {folder.name} was not handed to this process"
                + (f" ({problem})" if problem else f" (it is {derive(folder, status).state})")
            )
        value = status.model_dump()
        value.update(owner=_owner_dict(me), updated=time.time())
        files.write_json(folder / STATUS_FILE, value)
        return value


def record_job(folder: Path, process: ProcessIdentity, token: str, command: list[str]) -> None:
    """The launcher notes which process it started (until that process claims the run)."""
    files.write_json(
        folder / JOB_FILE,
        {**process.to_dict(), "token": token, "command": command, "launched_at": time.time()},
    )


@contextlib.contextmanager
def running(folder: Path, owner: Owner) -> Iterator[None]:
    """The owner's work on a run: it moves to 'running'; if the block raises anything, the run ends
    'failed' with the error's one-line reason (and the error goes on)."""
    transition(folder, RUNNING, by=owner, started=time.time())
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(RunStateError, OSError):
            transition(folder, FAILED, by=owner, error=one_line(exc), finished=time.time())
        raise


def request_stop(folder: Path, reason: str = "") -> None:
    """Ask the owning process to stop after the current batch (it saves the model, then 'stopped');
    ``reason`` is kept in the run's summary (e.g. the tuner pruning a trial)."""
    (folder / STOP_FILE).write_text(reason)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An error as the one-line reason a status keeps: its type and the first line of its message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"
