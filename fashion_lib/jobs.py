"""Background jobs: training runs (and tuning studies) started as their own processes, one at a time.

A job is the same ``python -m fashion_lib train --run-dir RUN`` the command line runs, started in its own
process session so that reloading the page or closing the browser does not stop it. One job at a time
holds the machine's lock (``$FASHION_HOME/jobs/train.lock``); others wait for it with status 'queued'.

A start that must not queue takes the lock *before* it returns and passes it to the child process (an
inherited file descriptor), so two quick starts can never both run. The run is handed to the child with a
one-time token (``lifecycle.hand_over``); the child claims it and is its only writer from then on. Stop
signals only a process whose identity (pid + start time) matches the one recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashion_lib import config, lifecycle, models, processes, runs

LOG_FILE = "train.log"
LOG_FILES = {"train": LOG_FILE, "tune": "tune.log"}  # the job's output, in its folder
QUEUED_STOP_WAIT_S = 5.0  # how long stop waits for a queued job's process to end


@dataclass(frozen=True)
class ActiveJob:
    """The job that holds the machine now: its folder (a run, or a tuning job) and kind."""

    folder: Path
    kind: str  # "train" or "tune"
    pid: int | None

    @property
    def name(self) -> str:
        return self.folder.name


class JobBusyError(Exception):
    """Another job holds the machine; the message names it."""

    def __init__(self, active: ActiveJob | None):
        if active is None:
            what = "another job"
        else:
            what = f"{'tuning job' if active.kind == 'tune' else 'training run'} {active.name}"
        super().__init__(f"{what} is running; wait for it, stop it, or queue yours")
        self.active = active


# What creating a run or job (``training.start_run``, ``tuning.search.create_job``) and starting it
# (``launch``, ``start``) refuse with: each carries a message for the user, shown instead of a traceback.
START_ERRORS = (JobBusyError, lifecycle.RunStateError, models.WeightsUnavailableError, ValueError, OSError)


def jobs_dir() -> Path:
    folder = config.fashion_home() / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _lock_path() -> Path:
    return jobs_dir() / "train.lock"


def _holder_path() -> Path:
    return jobs_dir() / "active.json"


def _try_lock(handle, tries: int = 3) -> bool:
    """Take the lock if it is free. ``active_job`` probes it by taking it for an instant, so a refusal is
    tried again twice, 20 ms apart, before it counts."""
    for attempt in range(tries):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.02)
            continue
        return True
    return False


def _write_holder(folder: Path, kind: str) -> None:
    runs.write_json(
        _holder_path(), {"run": str(folder), "kind": kind, "process": processes.current().to_dict()}
    )


@contextlib.contextmanager
def machine_lock(
    folder: Path,
    kind: str = "train",
    wait: bool = True,
    on_wait: Callable[[ActiveJob | None], None] | None = None,
    inherited_fd: int | None = None,
) -> Iterator[None]:
    """Hold the machine's job lock while ``folder``'s job runs: take it over from the launcher
    (``inherited_fd``), or wait for it (or raise JobBusyError when ``wait`` is False)."""
    if inherited_fd is not None:
        handle = os.fdopen(inherited_fd, "a+")
        if not _try_lock(handle):  # the launcher's lock is ours already: this only confirms it
            handle.close()
            raise JobBusyError(active_job())
    else:
        handle = _lock_path().open("a+")
        if not _try_lock(handle):
            if not wait:
                handle.close()
                raise JobBusyError(active_job())
            if on_wait is not None:
                on_wait(active_job())
            fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        _write_holder(folder, kind)
        yield
    finally:
        with contextlib.suppress(OSError):
            _holder_path().unlink()
        handle.close()  # closing releases the lock, also when the process dies


def active_job() -> ActiveJob | None:
    """The job whose process holds the machine's lock now, or None when the machine is free."""
    if not _lock_path().exists():
        return None
    with _lock_path().open("a+") as handle:
        if _try_lock(handle, tries=1):
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
    holder = runs.read_json(_holder_path()) or {}
    if not isinstance(holder.get("run"), str):
        return ActiveJob(Path("unknown"), "train", None)
    process = processes.ProcessIdentity.from_dict(holder.get("process"))
    return ActiveJob(Path(holder["run"]), str(holder.get("kind", "train")), process.pid if process else None)


def active_run() -> Path | None:
    """The folder of the job holding the machine now (a run, or a tuning job), or None."""
    job = active_job()
    return job.folder if job else None


def start(folder: Path, queue: bool = False, kind: str = "train") -> subprocess.Popen:
    """Start the prepared run (or tuning job) ``folder`` in its own process session.

    Without ``queue`` the machine's lock is taken here, before returning, and handed to the child: raises
    JobBusyError when another job holds it. With ``queue`` the child waits for the lock (status 'queued').
    Resuming a stopped, failed or interrupted run goes through here too; a completed run, or one a live
    process owns, raises ``lifecycle.RunStateError``."""
    me = processes.current()
    handle = None
    if not queue:
        handle = _lock_path().open("a+")
        if not _try_lock(handle):
            handle.close()
            raise JobBusyError(active_job())
        _write_holder(folder, kind)
    token = secrets.token_hex(8)
    started = False
    try:
        lifecycle.hand_over(folder, token, by=me)
        arguments = [kind, "--run-dir", str(folder), "--token", token]
        fds: tuple[int, ...] = ()
        if handle is not None:
            fds = (handle.fileno(),)
            arguments += ["--lock-fd", str(handle.fileno())]
        try:
            proc = spawn(arguments, folder / LOG_FILES[kind], start_new_session=True, pass_fds=fds)
        except OSError as exc:
            lifecycle.transition(folder, lifecycle.FAILED, by=token, error=lifecycle.one_line(exc))
            raise
        identity = processes.identify(proc.pid) or processes.ProcessIdentity(proc.pid)
        lifecycle.record_job(folder, identity, token, proc.args)
        started = True
        return proc
    finally:
        if handle is not None:
            if not started:
                with contextlib.suppress(OSError):
                    _holder_path().unlink()
            handle.close()  # the child holds the lock through its inherited descriptor


def spawn(arguments: list[str], log: Path, **popen: Any) -> subprocess.Popen:
    """``python -m fashion_lib ARGUMENTS`` from the checkout, unbuffered, its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fashion_lib", *arguments],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=config.REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            **popen,
        )


def launch(folder: Path, queue: bool = False, kind: str = "train") -> subprocess.Popen:
    """Start a folder this process has just created (a new run, or a tuning job). If it cannot start —
    another job holds the machine, the run cannot be handed over, no process can be made — the folder is
    removed again, so nothing is left queued in the launcher's name."""
    try:
        return start(folder, queue=queue, kind=kind)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _launched_child(folder: Path) -> processes.ProcessIdentity | None:
    """The process a launcher started for the run (job.json), whether or not it has claimed the run yet."""
    job = lifecycle.read_job(folder)
    return processes.ProcessIdentity(job.pid, job.start_ticks, job.boot_id) if job else None


def stop(folder: Path) -> bool:
    """Ask the run's process to stop: a training run finishes the current batch, saves its model and ends
    'stopped'; a queued one ends at once. Returns False when nothing was running.

    Signals go only to the run's own process, recognised by its recorded identity, and to its whole
    session only when it is a child this app started in a session of its own. A run this very process
    created and never started is simply closed; a tuning trial gets the request file alone (its worker
    goes on with the next trial); a process still starting finds the request file when it begins."""
    state = lifecycle.state_of(folder)
    if not state.active:
        return False
    me = processes.current()
    if state.owner == me:
        lifecycle.transition(folder, lifecycle.STOPPED, by=me, finished=time.time())
        return True
    lifecycle.request_stop(folder)
    if (folder / runs.TRIAL_FILE).exists():
        return True
    child = _launched_child(folder)
    process = state.owner or child
    if process is None:
        return True
    if state.state != lifecycle.QUEUED:
        process.signal(signal.SIGTERM)  # a running job stops itself after the current batch
        return True
    # A queued job has done no work: end it (with its session, if it is our child). Once it is gone, a run
    # that was still waiting (or had not even claimed the run yet) is closed as stopped by us.
    process.signal(signal.SIGTERM, group=process == child)
    deadline = time.monotonic() + QUEUED_STOP_WAIT_S
    while process.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if lifecycle.effective_state(folder) == lifecycle.INTERRUPTED:
        with contextlib.suppress(lifecycle.RunStateError):
            lifecycle.transition(folder, lifecycle.STOPPED, by=me, finished=time.time())
    return True


def queue_position(folder: Path) -> int | None:
    """1 for the next job to start, 2 for the one after …; None when ``folder`` is not queued. Training
    runs and tuning jobs wait for the same machine, so both count.

    The order is the order they were queued in; the lock itself makes no promise of order, so this is
    what a user can expect, not a guarantee."""
    from fashion_lib.tuning import search

    folders = [info.folder for info in runs.list_runs(include_shipped=False)]
    folders += [job for job, _ in search.list_jobs()]
    waiting = []
    for candidate in folders:
        state = lifecycle.state_of(candidate)
        if state.state == lifecycle.QUEUED:
            waiting.append((state.queued_at or 0.0, str(candidate), candidate))
    order = [f for _, _, f in sorted(waiting)]
    return order.index(folder) + 1 if folder in order else None


STOP, RESUME, AGAIN, DELETE = "stop", "resume", "train again", "delete"


def actions(state: lifecycle.RunState) -> tuple[str, ...]:
    """What a user may do with a run in this state: stop a live one; resume one that stopped, failed or was
    interrupted; train any ended one again as a new run; delete what no process owns."""
    if state.active:
        return (STOP,)
    if state.state == lifecycle.DAMAGED:
        return (DELETE,)
    if state.resumable:
        return (RESUME, AGAIN, DELETE)
    return (AGAIN, DELETE)


def state_message(folder: Path, state: lifecycle.RunState) -> tuple[str, str] | None:
    """(level, sentence) saying what the state means for the user: level is 'info', 'warning' or 'error'."""
    if state.state == lifecycle.QUEUED:
        if state.detail == "starting":
            return "info", "Starting the training process…"
        position = queue_position(folder)
        holder = active_job()
        ahead = f" behind {holder.name}" if holder and holder.folder != folder else ""
        place = f" (number {position} in line)" if position else ""
        return "info", f"Queued{place}{ahead}: it starts when the machine is free."
    if state.state == lifecycle.STOPPING:
        return "info", "Stopping: the run finishes the current batch and saves its model."
    if state.state == lifecycle.FAILED:
        return "error", f"The run failed: {state.error or 'no reason was recorded'}."
    if state.state == lifecycle.INTERRUPTED:
        return (
            "warning",
            f"The run did not finish: {state.detail}. Resume continues from its last finished epoch.",
        )
    if state.state == lifecycle.STOPPED:
        return "info", "The run was stopped. Resume continues it from its last finished epoch."
    if state.state == lifecycle.DAMAGED:
        return "error", f"This run folder is damaged: {state.detail}."
    return None


def read_log_tail(folder: Path, lines: int = 20, name: str = LOG_FILE) -> str:
    path = folder / name
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
