"""Writing files so that no reader ever sees half of one, and reading JSON and arrays that may be damaged.

Every write goes to a uniquely named temporary file beside the target and replaces it atomically: a crash
leaves the old file or the new one, never a torn one, and two writers never share a temporary file. The file
gets the permissions an ordinary ``open(path, "w")`` would give it (the process's umask), not the private
0600 of a temporary file."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import io
import json
import math
import os
import shutil
import stat
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


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


def staging_beside(target: Path) -> Path:
    """A new empty folder beside ``target`` under a hidden unique name, to build ``target`` in; readable
    as an ordinary folder is (mkdtemp's 0700 would hide what it becomes from other users)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    os.chmod(staging, 0o777 & ~UMASK)
    return staging


_held = threading.local()  # the lock files this thread holds: taking one again would wait for ever


@contextlib.contextmanager
def locked(path: Path, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the lock file ``path`` (made if missing; opened for writing, as NFS needs)
    for the block, waiting for whoever holds it. Released when the process ends, killed or not. Taking a
    lock this thread already holds raises instead of waiting for ever.

    ``remove``: the file is removed before the lock is released, so nothing is left beside a user's
    folder; whoever waited on the removed file sees it is no longer the lock file and takes the new one."""
    key = os.path.abspath(path)
    held = _held.__dict__.setdefault("paths", set())
    if key in held:
        raise RuntimeError(f"{path} is already locked by this thread")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(fd)
        if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            break
        os.close(fd)  # removed by the holder we waited for: take the lock file as it is now
    held.add(key)
    try:
        yield
    finally:
        held.discard(key)
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        os.close(fd)


def lock_beside(target: Path) -> Path:
    """The lock file of ``target`` (a folder that is swapped or exported into): hidden, beside it, and
    removed after each use (``locked(..., remove=True)``)."""
    return target.parent / f".{target.name}.lock"


def _aside(target: Path) -> list[Path]:
    """The folders :func:`new_folder` moved aside for ``target`` and did not remove, newest first."""

    def mtime(path: Path) -> float:
        try:
            return path.lstat().st_mtime
        except OSError:  # removed meanwhile
            return 0.0

    names = glob.glob(f".{glob.escape(target.name)}.old-*", root_dir=target.parent)
    return sorted((target.parent / name for name in names), key=mtime, reverse=True)


def restore_interrupted(target: Path) -> bool:
    """Tidy up after a :func:`new_folder` killed halfway; call it holding ``lock_beside(target)``. Killed
    between its two renames (``target`` gone, ``.NAME.old-*`` beside it), the earlier folder is put back
    (True); killed after them, the earlier folder left aside is removed."""
    aside = _aside(target)
    if target.exists() or target.is_symlink():
        for path in aside:
            _remove(path)
        return False
    for path in aside:
        with contextlib.suppress(OSError):  # taken back by another process, or not ours to rename
            path.rename(target)
            return True
    return False


def _remove(path: Path) -> None:
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def new_folder(target: Path) -> Iterator[Path]:
    """A folder to build ``target`` in, beside it under a temporary name. On leaving the block it replaces
    ``target`` whole; on an error it is removed and ``target`` stays as it was (a disk filling up halfway,
    a failed check: the folder written before is untouched, and nothing of it is mixed with the new one).
    A process killed between the two renames leaves the earlier folder aside, which
    :func:`restore_interrupted` puts back (here, and when shipped models are listed). The swap holds the
    target's lock (``lock_beside``): two swaps of one target never interleave."""
    staging = staging_beside(target)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = None
    with locked(lock_beside(target), remove=True):
        try:
            restore_interrupted(target)
            if target.exists() or target.is_symlink():
                previous = staging.with_name(staging.name.replace(".new-", ".old-", 1))  # unique as staging
                target.rename(previous)
            staging.rename(target)
        except OSError:
            if previous is not None and not target.exists():
                previous.rename(target)  # put the old one back
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if previous is not None:
        _remove(previous)


def write_json(path: Path, value: Any) -> None:
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, default=str))


def write_text(path: Path, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text)


def read_bytes(path: Path) -> bytes:
    """The bytes of the regular file ``path``; OSError for anything else. Opened without waiting: a pipe
    where a run's file should be would otherwise block the reader (and the page) until someone writes."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{Path(path).name} is not a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def parse_json(text: str | bytes) -> Any:
    """``json.loads``, raising ValueError for JSON nested too deep to parse too (2 kB of brackets in a run's
    summary.json raised RecursionError, which went through every page that lists runs)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


def read_json(path: Path) -> Any:
    """The JSON value in ``path``, or None when it is missing, unreadable or not JSON."""
    try:
        return parse_json(read_bytes(path))
    except (OSError, ValueError):
        return None


MAX_ARRAY_BYTES = 1 << 30  # what read_arrays unpacks at most, all arrays together


def read_arrays(path: Path, max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """Every array in the ``.npz`` file ``path``, by name. Raises ValueError saying why when it cannot be
    used: missing; not a regular file (a folder, or a pipe whose read would wait for ever); not an ``.npz``
    archive, damaged or cut short; an entry that is not an array, or holds pickled objects; zip features
    NumPy cannot read (encryption); arrays whose headers claim more than their entries hold, or more than
    ``max_bytes`` in all. Each header is checked before any array is allocated."""
    try:
        raw = read_bytes(path)  # a regular file only (a pipe would wait for ever), read through one open
    except FileNotFoundError:
        raise ValueError(f"{path.name} is missing") from None
    except OSError as exc:  # read_bytes's own "is not a regular file" has no errno
        why = str(exc) if exc.errno is None else f"{path.name} cannot be read ({exc.strerror})"
        raise ValueError(why) from None
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            entries = archive.infolist()
            total = 0
            for entry in entries:
                if not entry.filename.endswith(".npy"):
                    raise ValueError(f"its entry {entry.filename!r} is not an array")
                if entry.flag_bits & 0x1:
                    raise ValueError(f"{entry.filename} is encrypted")
                with archive.open(entry) as stream:
                    dtype, count, header_bytes = _array_header(stream)
                if dtype.hasobject:
                    raise ValueError(f"{entry.filename} holds Python objects")
                if header_bytes + dtype.itemsize * count > entry.file_size:
                    raise ValueError(f"{entry.filename} claims more bytes than it holds")
                total += dtype.itemsize * count
                if total > max_bytes:
                    raise ValueError(f"its arrays hold more than {max_bytes:,} bytes")
            arrays = {}
            for entry in entries:
                with archive.open(entry) as stream:
                    arrays[entry.filename[: -len(".npy")]] = np.lib.format.read_array(stream)
            return arrays
    except ValueError as exc:
        raise ValueError(f"{path.name} cannot be read ({exc})") from None
    except zipfile.BadZipFile:
        raise ValueError(f"{path.name} cannot be read (not a whole .npz archive: cut off?)") from None
    except Exception as exc:  # zlib, a NumPy format it does not know, an allocation that fails ...
        raise ValueError(f"{path.name} cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None


def _array_header(stream) -> tuple[np.dtype, int, int]:
    """(dtype, element count, header length) of the ``.npy`` array starting in ``stream``."""
    version = np.lib.format.read_magic(stream)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in read_header:
        raise ValueError(f"array format {version} is not known")
    shape, _, dtype = read_header[version](stream)
    return dtype, math.prod(shape), stream.tell()
