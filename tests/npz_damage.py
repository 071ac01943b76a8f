"""Ways a tester damages an ``.npz`` file, for the tests of ``files.read_arrays`` and of every reader that
stands on it (saved predictions, kept familiarity statistics, caches). ``damage`` turns a sound archive
into one of ``WAYS``."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

WAYS = (
    "cut short",
    "not a numpy file",
    "empty",
    "a single array",
    "an entry that is not an array",
    "a header claiming a huge array",
    "a pickled entry",
    "a pipe",
    "a folder",
    "encrypted",
)


def entries(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}


def rewritten(path: Path, arrays: dict, raw: dict[str, bytes]) -> None:
    """The archive of ``arrays`` with the ``raw`` ones written as the bytes given, not as arrays."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in arrays.items():
            if name in raw:
                archive.writestr(f"{name}.npy", raw[name])
            else:
                buffer = io.BytesIO()
                np.save(buffer, value)
                archive.writestr(f"{name}.npy", buffer.getvalue())


def huge_header() -> bytes:
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10, 10**11)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + bytes(64)  # 7 TiB claimed, 64 bytes there


def damage(path: Path, how: str, entry: str | None = None) -> None:
    """Damage the sound archive ``path`` the way ``how`` (one of WAYS) says; ``entry`` names the array the
    entry-level ways hit (default: the first)."""
    whole = path.read_bytes()
    arrays = entries(path)
    entry = entry or next(iter(arrays))
    if how == "cut short":
        path.write_bytes(whole[: len(whole) // 2])
    elif how == "not a numpy file":
        path.write_bytes(b"not a numpy file")
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "a single array":
        with path.open("wb") as out:
            np.save(out, arrays[entry])
    elif how == "an entry that is not an array":
        rewritten(path, arrays, {entry: b"garbage"})
    elif how == "a header claiming a huge array":
        rewritten(path, arrays, {entry: huge_header()})
    elif how == "a pickled entry":
        arrays[entry] = np.array([{}], dtype=object)
        with path.open("wb") as out:
            np.savez(out, **arrays)
    elif how in ("a pipe", "a folder"):
        path.unlink()
        if how == "a pipe":
            os.mkfifo(path)  # opening it to read would wait for a writer for ever
        else:
            path.mkdir()
    elif how == "encrypted":
        flagged = bytearray(whole)  # the "encrypted" bit in every local and central header
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = flagged.find(signature)
            while at >= 0:
                flagged[at + offset] |= 1
                at = flagged.find(signature, at + 4)
        path.write_bytes(bytes(flagged))
    else:
        raise ValueError(f"unknown damage {how!r}")
