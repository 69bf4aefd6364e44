"""`enrich demo`: the main job end to end on the bundled sample articles.

With Redis reachable: start a worker, publish the samples, wait until each is stored or
dead-lettered, stop the worker, print a summary. Without Redis: say so, run embedded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from worker.settings import Settings, redact_url

SAMPLES = Path(__file__).parent / "samples"
OUTPUT = Path("enriched")


def broker_problem(settings: Settings) -> str | None:
    try:
        redis.Redis.from_url(settings.broker_url, socket_connect_timeout=2).ping()
    except (redis.RedisError, ValueError) as exc:
        return str(exc)
    return None


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen:
    # One process: the samples are deduplicated in publish order, so the output is stable.
    log = log_path.open("w")
    cmd = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--queues", settings.queue,
           "--concurrency", "1", "--hostname", f"demo-{os.getpid()}@%h", "--task-events"]
    env = {**os.environ, "ENRICH_LOG_FORMAT": "json"}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _stop_worker(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # warm shutdown: finish what it holds
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for(ids: list[str], since: str, settings: Settings, timeout: float, worker):
    """Stored documents (written since `since`) and dead letters for `ids`."""
    from worker.deadletter import DeadLetters
    from worker.resources import redis_client
    from worker.store import open_store

    store = open_store(settings.store_url)
    dead = DeadLetters(redis_client(settings.broker_url), settings.dead_letter_key)
    dead_before = dead.count()
    stored: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        for doc_id in ids:
            if doc_id not in stored:
                doc = store.get(doc_id)
                if doc and doc["processed_at"] >= since:
                    stored[doc_id] = doc
        for entry in dead.list(dead_before, -1):
            if entry.get("id") in ids:
                failed[entry["id"]] = entry
        if len(stored) + len(failed) >= len(ids):
            break
        time.sleep(0.5)
    return stored, failed


def summary_table(documents: list[dict[str, Any]]) -> Table:
    table = Table(title="Enriched articles")
    for column in ("id", "language", "title", "entities", "top entities", "duplicate of"):
        table.add_column(column, overflow="fold")
    for doc in documents:
        top = ", ".join(f"{e['text']} ({e['label']})" for e in doc["entities"][:3])
        dedupe = doc["dedupe"]
        dup = f"{dedupe['duplicate_of']} ({dedupe['similarity']})" if dedupe["duplicate_of"] else "-"
        table.add_row(doc["id"], doc["language"]["code"], (doc["title"] or "")[:50],
                      str(len(doc["entities"])), top or "-", dup)
    return table


def run_demo(settings: Settings, *, embedded: bool = False, timeout: int = 180) -> int:
    from worker.producer import publish, read_inputs

    console = Console()
    OUTPUT.mkdir(exist_ok=True)
    out_path = OUTPUT / "demo.jsonl"
    problem = None if embedded else broker_problem(settings)
    if problem:
        console.print(f"[yellow]Redis is not reachable at {redact_url(settings.broker_url)} "
                      f"({problem}); running the embedded mode instead.[/yellow]")
    inputs = [str(SAMPLES)]
    if embedded or problem:
        from worker.cli import run_embedded

        with out_path.open("w", encoding="utf-8") as stream:
            documents, rejected = run_embedded(inputs, settings, stream)
        failed = {r.id or r.where: {"reason": r.reason, "error": r.error} for r in rejected}
        mode = "embedded (no broker)"
    else:
        since = datetime.now(UTC).isoformat()
        worker_log = OUTPUT / "demo-worker.log"
        console.print(f"Starting a worker on {redact_url(settings.broker_url)} "
                      f"(queue {settings.queue!r}; log: {worker_log})")
        worker = _start_worker(settings, worker_log)
        try:
            report = publish(read_inputs(inputs, settings), settings=settings)
            console.print(f"Published {len(report.published)} articles, "
                          f"rejected {len(report.rejected)}; waiting for the worker...")
            stored, failed = _wait_for(report.published, since, settings, timeout, worker)
        finally:
            _stop_worker(worker)
        documents = [stored[i] for i in report.published if i in stored]
        for r in report.rejected:
            failed[r.where] = {"reason": r.reason, "error": r.error}
        with out_path.open("w", encoding="utf-8") as stream:
            for doc in documents:
                stream.write(json.dumps(doc, ensure_ascii=False) + "\n")
        missing = [i for i in report.published if i not in stored and i not in failed]
        if missing:
            console.print(f"[red]Not finished within {timeout}s: {', '.join(missing)} "
                          f"(see {worker_log})[/red]")
        mode = "Celery worker + Redis"
    console.print(summary_table(documents))
    for key, entry in failed.items():
        console.print(f"[red]dead-lettered/rejected {key}: {entry['reason']}: "
                      f"{entry.get('error', '')}[/red]")
    console.print(f"Mode: {mode}. Enriched documents are in {redact_url(settings.store_url)} "
                  f"(`enrich get ID`, `enrich export`) and in {out_path}.")
    return 0 if documents and not failed else 1
