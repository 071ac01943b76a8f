"""Shared fixtures. Every test session writes into its own temporary FASHION_HOME, never into the checkout."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Set before any test (or the Streamlit server a test starts) reads the settings.
    os.environ["FASHION_HOME"] = tempfile.mkdtemp(prefix="fashion_home_test_")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def dataset():
    """The real, verified Fashion-MNIST, loaded once per test session."""
    from fashion_lib import data

    return data.load()


@pytest.fixture
def without_dataset(monkeypatch) -> None:
    """From here on, Fashion-MNIST cannot be found (as on a machine that serves an export)."""
    from fashion_lib import data

    def not_found(*args, **kwargs):
        raise data.DataNotFoundError("no Fashion-MNIST on this machine")

    monkeypatch.setattr(data, "load", not_found)


@pytest.fixture(scope="session")
def data_folder(dataset) -> Path:
    """The folder the real data was loaded from."""
    return dataset.source.folder


def move_run(folder: Path, state: str, **fields) -> None:
    """Move a run this test created (this process owns it) to ``state``, as a training process would."""
    from fashion_lib import lifecycle, processes

    me = processes.current()
    if state != lifecycle.QUEUED:
        lifecycle.transition(folder, lifecycle.RUNNING, by=me)
    if state not in (lifecycle.QUEUED, lifecycle.RUNNING):
        lifecycle.transition(folder, state, by=me, **fields)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, dataset) -> Path:
    """One tiny completed baseline run (2 epochs on 200 images), trained once per test session in its own
    FASHION_HOME. Read it, or copy it before changing it."""
    from fashion_lib import train
    from tests.unit.test_train import tiny

    home = tmp_path_factory.mktemp("home")
    old = os.environ["FASHION_HOME"]
    os.environ["FASHION_HOME"] = str(home)
    try:
        return train.train(tiny(epochs=2))
    finally:
        os.environ["FASHION_HOME"] = old
