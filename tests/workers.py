"""Helpers for tests that run real `enrich` processes (workers, publish, CLI).

The command runner, settings environment, shutdown and polling are the fault battery's
(worker/faults/harness.py); only `start_worker` differs: here the test's own settings
decide the metrics port and heartbeat file, and extra celery arguments pass through.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from worker.faults.harness import ENRICH, enrich, settings_env, stop_worker, wait_until
from worker.settings import Settings

__all__ = ["ENRICH", "enrich", "settings_env", "start_worker", "stop_worker", "wait_until"]


def start_worker(settings: Settings, log: Path, *, hostname: str = "test@%h",
                 concurrency: int = 1, extra: list[str] = ()) -> subprocess.Popen:
    """A real `enrich worker` process (prefork pool); its output goes to `log`."""
    handle = log.open("ab")
    try:
        return subprocess.Popen(
            [*ENRICH, "worker", "--concurrency", str(concurrency), "--hostname", hostname,
             *extra],
            env=settings_env(settings), stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        handle.close()
