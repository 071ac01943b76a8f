"""Child processes for tests and benchmarks: a free loopback port to start a server on, the app itself as
a real `streamlit run` server, and stopping a server's whole process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fashion_lib.config import REPO_ROOT

STARTUP_TIMEOUT_S = 60


def command(*args: str, quiet: bool = False, **popen) -> subprocess.Popen:
    """``python -m fashion_lib ARGS`` in the background, from the checkout: its output readable as text
    from ``.stdout`` (stderr merged), or discarded when ``quiet``."""
    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    err = subprocess.DEVNULL if quiet else subprocess.STDOUT
    return subprocess.Popen(
        [sys.executable, "-m", "fashion_lib", *args],
        cwd=REPO_ROOT,
        stdout=out,
        stderr=err,
        text=True,
        **popen,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group of ``proc`` (started with ``start_new_session=True``), SIGKILL after
    10 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"streamlit did not answer within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def start_app(log: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run app/main.py` on a free loopback port, in its own process session, output to ``log``;
    returns the process and its base URL once it answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true"]
    cmd += ["--server.address", "127.0.0.1", "--server.port", str(port)]
    cmd += ["--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, log)
    except RuntimeError:
        stop(proc)
        raise
    return proc, url
