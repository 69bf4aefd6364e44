"""Helpers for tests that run real `enrich` processes (workers, publish, CLI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import settings_env
from worker.settings import Settings

ENRICH = [sys.executable, "-m", "worker.cli"]


def enrich(*args: str, settings: Settings, input: bytes | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the `enrich` command with these settings; returns the finished process."""
    return subprocess.run([*ENRICH, *args], env=settings_env(settings), input=input,
                          capture_output=True, timeout=timeout)


def start_worker(settings: Settings, log: Path, *, hostname: str = "test@%h",
                 concurrency: int = 1, extra: list[str] = ()) -> subprocess.Popen:
    """A real `enrich worker` process (prefork pool); its output goes to `log`."""
    handle = log.open("ab")
    return subprocess.Popen(
        [*ENRICH, "worker", "--concurrency", str(concurrency), "--hostname", hostname, *extra],
        env=settings_env(settings), stdout=handle, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(process: subprocess.Popen, timeout: float = 30) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL of the whole process group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.25,
               what: str = "condition"):
    """Poll until predicate() is truthy; returns its value or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
