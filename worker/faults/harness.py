"""Real worker processes for fault experiments (`enrich faults`) and the reliability tests.

A worker started here is `python -m worker.cli worker` in its own session (process group),
with the given settings in its environment plus optional test-only fault injection
(ENRICH_TEST_KILL_*, see worker/tasks.py). Its log is JSON lines in a file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from worker.settings import Settings

ENRICH = [sys.executable, "-m", "worker.cli"]


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This environment without ENRICH_* variables, plus every setting as ENRICH_*, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICH_")}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"ENRICH_{name.upper()}"] = str(value)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def enrich(*args: str, settings: Settings, env: dict[str, str] | None = None,
           input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the `enrich` command with these settings."""
    return subprocess.run([*ENRICH, *args], env=settings_env(settings, **(env or {})),
                          input=input, capture_output=True, timeout=timeout)


def start_worker(settings: Settings, log: Path, *, env: dict[str, str] | None = None,
                 concurrency: int = 1, hostname: str = "faults@%h") -> subprocess.Popen:
    """A real `enrich worker` (prefork pool) in its own process group; output to `log`.
    No metrics port and a heartbeat file of its own, so several can run side by side."""
    extra = {"ENRICH_METRICS_PORT": "0",
             "ENRICH_HEARTBEAT_FILE": str(log.with_suffix(".heartbeat")), **(env or {})}
    handle = log.open("ab")
    try:
        return subprocess.Popen(
            [*ENRICH, "worker", "--concurrency", str(concurrency), "--hostname", hostname,
             "--without-gossip", "--without-mingle"],
            env=settings_env(settings, **extra), stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        handle.close()


def stop_worker(process: subprocess.Popen, timeout: float = 30) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL of the whole process group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(process)
    else:
        kill_group(process)  # pool children left behind by a killed main process


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2,
               what: str = "condition") -> Any:
    """Poll until predicate() is truthy; returns its value or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def log_events(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of a worker log (other lines skipped)."""
    events = []
    if not log.exists():
        return events
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def event_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
