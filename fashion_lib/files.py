"""Writing files so that no reader ever sees half of one, and reading JSON that may be damaged.

Every write goes to a uniquely named temporary file beside the target and replaces it atomically: a crash
leaves the old file or the new one, never a torn one, and two writers never share a temporary file. The file
gets the permissions an ordinary ``open(path, "w")`` would give it (the process's umask), not the private
0600 of a temporary file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once, at import: changing it later would race with other threads' writes


@contextlib.contextmanager
def atomic(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path to write; on leaving the block it replaces ``path`` (removed on an error).
    ``suffix`` keeps a file type a writer insists on (``.keras``, ``.npz``)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~UMASK)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: Path, value: Any) -> None:
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, default=str))


def write_text(path: Path, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text)


def read_json(path: Path) -> Any:
    """The JSON value in ``path``, or None when it is missing, unreadable or not JSON."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
