"""Atomic writes: the whole new file or the old one, never a temporary left behind, ordinary permissions;
damaged JSON and array files are refused, never a crash or a hang."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fashion_lib import config, files, runs
from tests import npz_damage


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


@pytest.mark.parametrize("content", [b"", b"{\x00garbage", b"\xff\xfe", b'{"a": ', b"[" * 3000 + b"]" * 3000])
def test_damaged_json_reads_as_none(tmp_path, content):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    assert files.read_json(path) is None
    assert files.read_json(tmp_path / "missing.json") is None


def sound_archive(path):
    np.savez_compressed(path, probabilities=np.eye(10)[[1, 2]], labels=np.array([1, 2]))
    return path


def test_arrays_are_read_whole_with_their_names_and_types(tmp_path):
    arrays = files.read_arrays(sound_archive(tmp_path / "predictions.npz"))
    assert sorted(arrays) == ["labels", "probabilities"]
    assert arrays["labels"].tolist() == [1, 2] and arrays["probabilities"].dtype == np.float64


@pytest.mark.parametrize("how", npz_damage.WAYS)
def test_a_damaged_archive_is_refused_with_its_name_and_why(tmp_path, how):
    path = sound_archive(tmp_path / "predictions.npz")
    npz_damage.damage(path, how)
    with pytest.raises(ValueError, match=r"^predictions\.npz (cannot be read \(.+\)|is not a regular file)$"):
        files.read_arrays(path)  # never hangs (a pipe), allocates a claimed 7 TiB or unpickles


def test_arrays_beyond_the_limit_or_missing_are_refused(tmp_path):
    path = sound_archive(tmp_path / "predictions.npz")
    assert files.read_arrays(path, max_bytes=176)  # 160 + 16 bytes of arrays
    with pytest.raises(ValueError, match="hold more than 175 bytes"):
        files.read_arrays(path, max_bytes=175)
    with pytest.raises(ValueError, match=r"^missing\.npz is missing$"):
        files.read_arrays(tmp_path / "missing.npz")


def test_a_pipe_or_a_folder_where_a_file_should_be_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "summary.json")  # open() would wait for a writer for ever
    (tmp_path / "config.json").mkdir()
    for name in ("summary.json", "config.json"):
        with pytest.raises(OSError, match="is not a regular file"):
            files.read_bytes(tmp_path / name)
        assert files.read_json(tmp_path / name) is None
    (tmp_path / "status.json").write_text('{"state": "running"}')
    assert files.read_bytes(tmp_path / "status.json") == b'{"state": "running"}'


def test_a_new_folder_replaces_the_old_whole_or_leaves_it_and_nothing_else(tmp_path):
    target = tmp_path / "baseline"
    target.mkdir()
    (target / "model.keras").write_text("old")
    with pytest.raises(RuntimeError), files.new_folder(target) as staging:
        (staging / "model.keras").write_text("half")
        raise RuntimeError("disk full")
    assert (target / "model.keras").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [
        "baseline"
    ]
    with files.new_folder(target) as staging:
        (staging / "model.keras").write_text("new")
    assert (target / "model.keras").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == [
        "baseline"
    ]
    link = tmp_path / "link"  # a symlink in the target's place is replaced, its folder left alone
    link.symlink_to(target)
    with files.new_folder(link) as staging:
        (staging / "model.keras").write_text("newer")
    assert not link.is_symlink() and (link / "model.keras").read_text() == "newer"
    assert (target / "model.keras").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline", "link"]


_KILLED_BETWEEN_RENAMES = """
import os, pathlib, signal, sys
from fashion_lib import files
real_rename = pathlib.Path.rename
def rename(self, target):
    if ".new-" in self.name:  # the second rename: the earlier folder is already aside
        os.kill(os.getpid(), signal.SIGKILL)
    return real_rename(self, target)
pathlib.Path.rename = rename
with files.new_folder(pathlib.Path(sys.argv[1])) as staging:
    (staging / "model.keras").write_text("new")
"""


def test_a_swap_killed_between_its_renames_gets_the_earlier_folder_back(tmp_path, monkeypatch):
    """The earlier model was left in a hidden .NAME.old-* folder that nothing put back: the shipped model
    was gone from every page."""
    monkeypatch.setattr(config, "CACHED_MODELS_DIR", tmp_path / "cached_models")
    target = shutil.copytree(
        config.REPO_ROOT / "cached_models" / "baseline", tmp_path / "cached_models" / "b"
    )
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(target)], cwd=config.REPO_ROOT
    )
    assert killed.returncode == -signal.SIGKILL and not target.exists()
    assert [p.name.split(".old-")[0] for p in target.parent.glob(".*.old-*")] == [".b"]
    assert [info.folder.name for info in runs.shipped_models()] == ["b"]  # put back when listed
    assert not list(target.parent.glob(".*.old-*")) and (target / "card.json").is_file()
    target.rename(target.parent / ".b.old-x")  # and by the next swap, which then replaces it whole
    with files.new_folder(target) as staging:
        (staging / "model.keras").write_text("newer")
    assert (target / "model.keras").read_text() == "newer" and not (target / "card.json").exists()
    # left: the target and the killed swap's staging (it was not done); no lock file
    left = sorted(p.name.split(".new-")[0] for p in target.parent.iterdir())
    assert left == [".b", "b"]
    (target.parent / ".b.old-stale").mkdir()  # a swap killed after its renames left the earlier one aside
    runs.shipped_models()  # the listing tidies it away: the new one is in place
    assert not (target.parent / ".b.old-stale").exists() and (target / "model.keras").read_text() == "newer"


def test_a_lock_waits_for_whoever_holds_it_and_is_never_taken_twice_by_one_thread(tmp_path):
    order, waiting = [], threading.Event()
    lock = files.lock_beside(tmp_path / "baseline")

    def second():
        waiting.set()
        with files.locked(lock, remove=True):  # it waited on a file the first holder removed
            order.append("second")

    with files.locked(lock, remove=True):
        thread = threading.Thread(target=second, daemon=True)
        thread.start()
        waiting.wait(10)
        time.sleep(0.3)  # the second thread is at the lock by now
        order.append("first")
        with pytest.raises(RuntimeError, match="already locked by this thread"), files.locked(lock):
            pass  # nested, it would have waited for itself for ever
    thread.join(10)
    assert order == ["first", "second"] and lock.name == ".baseline.lock" and not lock.exists()
