"""Process identity: enough to recognise a process again, so nothing ever signals a stranger.

A pid alone is not an identity: after the process ends the kernel hands the number to the next process. A
``ProcessIdentity`` adds the process's start time (in clock ticks since boot, from ``/proc/<pid>/stat``) and
the boot id, so a reused pid or a reboot is told apart from the process that was recorded.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_PROC = Path("/proc")


def _boot_id() -> str | None:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3… of /proc/<pid>/stat (after the command name), or None when there is no such process."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    return text.rsplit(")", 1)[1].split()


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as it was recorded: pid, start time (clock ticks after boot) and boot id.

    ``start_ticks`` and ``boot_id`` are None where /proc is not available; then only the pid is checked."""

    pid: int
    start_ticks: int | None = None
    boot_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any) -> ProcessIdentity | None:
        """The identity stored in a status or job file; None when it is missing or not one."""
        if not isinstance(value, dict) or not isinstance(value.get("pid"), int) or value["pid"] <= 0:
            return None
        ticks, boot = value.get("start_ticks"), value.get("boot_id")
        return cls(
            value["pid"],
            ticks if isinstance(ticks, int) else None,
            boot if isinstance(boot, str) else None,
        )

    def alive(self) -> bool:
        """True while this very process runs (not a zombie, not a later process with the same pid)."""
        if self.pid <= 0:
            return False
        if self.boot_id is not None and _boot_id() not in (None, self.boot_id):
            return False  # recorded before the machine restarted
        fields = _stat_fields(self.pid)
        if fields is None:
            if _PROC.joinpath("self").exists():
                return False  # /proc works and has no such pid
            try:  # no /proc (not Linux): the pid alone
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        if fields[0] in ("Z", "X"):  # a zombie: finished, nobody waited for it yet
            return False
        return self.start_ticks is None or int(fields[19]) == self.start_ticks

    def signal(self, signum: int, group: bool = False) -> bool:
        """Send ``signum`` to this process (or its process group) if it is still this process.

        Returns False, sending nothing, when the process is gone or the pid now belongs to another one. On
        Linux the check and the signal go through a pidfd, so the pid cannot be reused in between."""
        if group:
            # The group of a process that started its own session has the leader's pid as its id.
            if not self.alive():
                return False
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)
                return True
            return False
        pidfd = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                pidfd = os.pidfd_open(self.pid)
        try:
            if not self.alive():  # checked after the pidfd pinned the process
                return False
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signum)
            else:
                os.kill(self.pid, signum)
            return True
        except (ProcessLookupError, PermissionError):
            return False
        finally:
            if pidfd is not None:
                os.close(pidfd)


def identify(pid: int) -> ProcessIdentity | None:
    """The identity of the running process ``pid`` now; None when there is no such process."""
    fields = _stat_fields(pid)
    if fields is None:
        return None if _PROC.joinpath("self").exists() else ProcessIdentity(pid)
    return ProcessIdentity(pid, int(fields[19]), _boot_id())


def current() -> ProcessIdentity:
    """This process's identity."""
    return identify(os.getpid()) or ProcessIdentity(os.getpid())


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Call in a child process: it gets ``sig`` when its parent dies, even by SIGKILL (Linux:
    PR_SET_PDEATHSIG; elsewhere nothing)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig))  # 1 = PR_SET_PDEATHSIG
