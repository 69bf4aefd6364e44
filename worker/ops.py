"""Worker operations: Prometheus metrics (correct under prefork) and the heartbeat.

Imported by the worker through the Celery app's `include`, in the main process before the
pool forks, so every child inherits PROMETHEUS_MULTIPROC_DIR and writes its own samples;
the main process serves them all, plus a queue-depth gauge read from Redis at scrape time.

Metrics (prefix `enrich_`):
  enrich_articles_enriched_total               counter   documents stored
  enrich_duplicates_total                      counter   documents found duplicate
  enrich_dead_letters_total{reason}            counter   dead-lettered, any reason
  enrich_articles_rejected_total{reason}       counter   dead-lettered as bad input
  enrich_stage_duration_seconds{stage}         histogram time of each completed stage
  enrich_queue_depth                           gauge     waiting + reserved (unacked)
  enrich_dead_letter_list_length               gauge     entries in the dead-letter list

Heartbeat: the consumer's own event loop writes ENRICH_HEARTBEAT_FILE every
ENRICH_HEARTBEAT_INTERVAL seconds with {at, active, processed, progress_at}; worker.health
reads it (`enrich health live|ready`). This module is for worker processes only: importing
it creates metric files, so probes and CLI commands never import it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from celery import bootsteps, signals

from worker.health import write_heartbeat
from worker.settings import Settings, get_settings

REJECT_REASONS = {"invalid_article", "too_large", "malformed_message", "empty_after_cleaning"}
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # before prometheus_client is imported
    _OWN_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="enrich-metrics-")
    _OWNER = os.getpid()

    @atexit.register
    def _remove_own_metrics_dir() -> None:
        # Only the process that made it (a forked child inherits this handler, and the
        # directory is its parent's to keep).
        if os.getpid() == _OWNER:
            shutil.rmtree(_OWN_DIR, ignore_errors=True)

_METRICS_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
_METRICS_DIR.mkdir(parents=True, exist_ok=True)
# Samples of an earlier run in a reused directory (one directory per worker) go now, before
# this process opens its own files: wiping later would cut the main process's counters off.
for _stale in _METRICS_DIR.glob("*.db"):
    _stale.unlink()

from prometheus_client import Counter, Histogram  # noqa: E402

ENRICHED = Counter("enrich_articles_enriched_total", "Documents stored.")
DUPLICATES = Counter("enrich_duplicates_total", "Documents found to duplicate an earlier one.")
DEAD_LETTERS = Counter("enrich_dead_letters_total", "Messages dead-lettered.", ["reason"])
REJECTED = Counter("enrich_articles_rejected_total", "Bad input dead-lettered.", ["reason"])
STAGE_SECONDS = Histogram("enrich_stage_duration_seconds", "Time in each stage.",
                          ["stage"], buckets=_BUCKETS)


def record_dead_letter(reason: str) -> None:
    DEAD_LETTERS.labels(reason=reason).inc()
    if reason in REJECT_REASONS:
        REJECTED.labels(reason=reason).inc()


_STAGE_TIMERS: dict[str, Any] = {}


def record_stage(stage: str, seconds: float) -> None:
    # Five times per article: labels() checks and locks on every call (4 of the 10 us an
    # observation took here), so each stage's child is kept. The multiprocess values notice
    # a fork themselves (prometheus_client checks the pid on every write).
    timer = _STAGE_TIMERS.get(stage)
    if timer is None:
        timer = _STAGE_TIMERS[stage] = STAGE_SECONDS.labels(stage=stage)
    timer.observe(seconds)


def record_stored(document: dict[str, Any]) -> None:
    ENRICHED.inc()
    if (document.get("dedupe") or {}).get("duplicate_of"):
        DUPLICATES.inc()


@signals.worker_process_shutdown.connect
def _child_exited(pid: int | None = None, **_: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid or os.getpid())


# --- the scrape endpoint (main process) ---------------------------------------------------
class QueueCollector:
    """Gauges read from Redis at scrape time: what an autoscaler should count."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client = None

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from worker.resources import redis_client

        if self._client is None:
            self._client = redis_client(self.settings.broker_url)
        from worker.broker import queue_depth

        try:
            depth = queue_depth(self._client, self.settings.queue)
            dead = self._client.llen(self.settings.dead_letter_key)
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is away
            return
        yield GaugeMetricFamily("enrich_queue_depth",
                                "Messages waiting plus reserved by workers (unacked).",
                                value=depth)
        yield GaugeMetricFamily("enrich_dead_letter_list_length",
                                "Entries in the dead-letter list.", value=dead)


def start_metrics_server(settings: Settings) -> int | None:
    """Serve /metrics on ENRICH_METRICS_PORT; returns the port, None when off or taken."""
    if not settings.metrics_port:
        return None
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    from worker.logs import get_logger

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(QueueCollector(settings))
    try:
        start_http_server(settings.metrics_port, addr=settings.metrics_address, registry=registry)
    except OSError as exc:
        get_logger("worker.ops").warning("metrics endpoint not started", error=str(exc),
                                         port=settings.metrics_port)
        return None
    return settings.metrics_port


@signals.worker_init.connect
def _worker_init(**_: Any) -> None:
    start_metrics_server(get_settings())


# --- heartbeat ---------------------------------------------------------------------------
class Heartbeat(bootsteps.StartStopStep):
    """Writes the heartbeat file from the consumer's event loop."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref = None
        self.processed = -1
        self.progress_at = time.time()

    def beat(self) -> None:
        from celery.worker import state

        settings = get_settings()
        processed = sum(state.total_count.values())
        active = len(state.active_requests)
        now = time.time()
        if processed != self.processed or active == 0:
            self.processed, self.progress_at = processed, now
        write_heartbeat(settings.heartbeat_file,
                        {"at": now, "active": active, "processed": processed,
                         "progress_at": self.progress_at, "pid": os.getpid()})

    def start(self, consumer) -> None:
        self.beat()
        self.tref = consumer.timer.call_repeatedly(get_settings().heartbeat_interval, self.beat)

    def stop(self, consumer) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, consumer) -> None:
        self.stop(consumer)
        Path(get_settings().heartbeat_file).unlink(missing_ok=True)


def install(celery_app) -> None:
    celery_app.steps["consumer"].add(Heartbeat)


def _install_on_worker_app() -> None:
    from worker.app import app

    install(app)


_install_on_worker_app()
