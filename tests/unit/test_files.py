"""Atomic writes: the whole new file or the old one, never a temporary left behind, ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from fashion_lib import files


def test_a_write_replaces_the_file_whole_with_ordinary_permissions(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    files.write_json(target, {"test_accuracy": 0.9})
    assert files.read_json(target) == {"test_accuracy": 0.9}
    # what open(path, "w") gives under this process's umask: readable by others unless the umask says no
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "status.json"
    target.write_text('{"state": "running"}')
    with pytest.raises(RuntimeError), files.atomic(target) as tmp:
        tmp.write_text('{"state": "comp')
        raise RuntimeError("killed halfway")
    assert files.read_json(target) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


@pytest.mark.parametrize("content", [b"", b"{\x00garbage", b"\xff\xfe", b'{"a": '])
def test_damaged_json_reads_as_none(tmp_path, content):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    assert files.read_json(path) is None
    assert files.read_json(tmp_path / "missing.json") is None
