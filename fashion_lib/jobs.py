"""Background training processes: start, stop, status, and one job at a time on this machine.

A job is the same ``python -m fashion_lib train --run-dir RUN`` the command line runs, started as its own
process session so that reloading the page or closing the browser does not stop it. The training process
holds an exclusive lock (``$FASHION_HOME/jobs/train.lock``) while it trains; a second job waits for the
lock with status 'queued', so two jobs never fight over the CPU cores.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from fashion_lib import config, runs

LOG_FILE = "train.log"


class JobBusyError(Exception):
    """Another training job is running; the message names it."""

    def __init__(self, active: Path):
        super().__init__(f"training run {active.name} is still running; wait for it, stop it, or queue yours")
        self.active = active


def jobs_dir() -> Path:
    folder = config.fashion_home() / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _lock_path() -> Path:
    return jobs_dir() / "train.lock"


def _holder_path() -> Path:
    return jobs_dir() / "active.json"


@contextlib.contextmanager
def training_lock(folder: Path, wait: bool = True, on_wait=None) -> Iterator[None]:
    """Hold the machine's training lock while training ``folder``; wait for it (or raise JobBusyError)."""
    handle = _lock_path().open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = active_run()
            if not wait:
                raise JobBusyError(holder or folder) from None
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        runs.write_json(_holder_path(), {"run": str(folder), "pid": os.getpid()})
        yield
    finally:
        with contextlib.suppress(OSError):
            _holder_path().unlink()
        handle.close()  # closing releases the lock, also when the process dies


def active_run() -> Path | None:
    """The run whose process holds the training lock now, or None when the machine is free."""
    if not _lock_path().exists():
        return None
    with _lock_path().open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = runs.read_json(_holder_path())
            return Path(holder["run"]) if holder and "run" in holder else None
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def start(folder: Path, queue: bool = False) -> subprocess.Popen:
    """Start training the prepared run ``folder`` in its own process session.

    Raises JobBusyError when another job runs and ``queue`` is False; with ``queue`` the new job waits
    (status 'queued') and starts when the machine is free.
    """
    active = active_run()
    if active is not None and not queue:
        raise JobBusyError(active)
    log = (folder / LOG_FILE).open("ab")
    cmd = [sys.executable, "-m", "fashion_lib", "train", "--run-dir", str(folder)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=config.REPO_ROOT,
        env=env,
        start_new_session=True,
    )
    log.close()
    runs.set_status(folder, "queued", pid=proc.pid)
    return proc


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A finished child that nobody waited for is a zombie: not alive for our purposes.
    with contextlib.suppress(OSError, ValueError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def effective_state(folder: Path) -> str:
    """The run's status, with 'running' or 'queued' turned into 'interrupted' when its process is gone."""
    status = runs.read_status(folder)
    state = status.get("state", "unknown")
    if state in ("running", "queued") and not process_alive(status.get("pid")):
        return "interrupted"
    return state


def stop(folder: Path) -> None:
    """Ask the run to stop gracefully: it finishes the current batch, saves the model, status 'stopped'.

    A queued run that has not started training is ended at once."""
    state = effective_state(folder)
    runs.request_stop(folder)
    status = runs.read_status(folder)
    if state == "queued":
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.killpg(status.get("pid"), signal.SIGTERM)
        runs.set_status(folder, "stopped", error=None)
    elif state == "running":
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(status.get("pid"), signal.SIGTERM)


def read_log_tail(folder: Path, lines: int = 20) -> str:
    path = folder / LOG_FILE
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
