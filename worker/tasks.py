"""Celery tasks: thin wrappers, one per stage, plus the store. All policy is in `_run`.

What each error does (worker.errors): Reject -> dead letter, chain stops, message acked;
Transient -> retry with exponential backoff, dead letter when retries run out; anything
else -> dead letter with reason `internal` (a bug: the article is kept for replay).
"""

from __future__ import annotations

from typing import Any

import redis
import structlog
from celery import signals
from celery.exceptions import Ignore, Retry

from worker import deadletter, logs
from worker.app import TASK_NAMES, app
from worker.errors import IndexUnavailable, Reject, Transient
from worker.pipeline import finish
from worker.resources import get_resources, reset_resources
from worker.settings import get_settings

log = logs.get_logger("worker.tasks")


def _article_id(payload: Any) -> str | None:
    if isinstance(payload, dict):
        value = payload.get("id") or None
        return value if isinstance(value, str) else None
    return None


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = get_settings()
    logs.configure(settings.log_format, settings.log_level)


@signals.worker_process_init.connect
def _fresh_resources(**_: Any) -> None:
    reset_resources()


@signals.task_prerun.connect
def _bind_task_context(task_id: str, task, args=(), **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        article_id=_article_id(args[0] if args else None),
        task_id=task_id,
        root_id=task.request.root_id,
        stage=task.name.removeprefix("enrich."),
    )


@signals.task_postrun.connect
def _clear_task_context(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


def _retry(task, exc: Transient) -> None:
    settings = get_settings()
    retries = task.request.retries
    if retries >= settings.max_retries:
        raise Reject(f"{exc.message} (gave up after {retries + 1} attempts)", reason=exc.reason)
    delay = min(settings.retry_backoff_max, 2 ** (retries + 1))
    log.warning("transient failure, retrying", reason=exc.reason, error=exc.message,
                retry_in_s=delay, attempt=retries + 1)
    raise task.retry(exc=exc, countdown=delay, max_retries=settings.max_retries)


def _dead_letter(task, payload: Any, reason: str, error: str) -> None:
    record = deadletter.entry(
        article_id=_article_id(payload), task=task.name, task_id=task.request.id,
        reason=reason, error=error, payload=payload, attempts=task.request.retries + 1,
    )
    try:
        get_resources().dead_letters.add(record)
    except redis.RedisError as exc:
        # Never ack what we could not park: retry (without limit) until Redis takes it.
        delay = min(get_settings().retry_backoff_max, 2 ** (task.request.retries + 1))
        log.warning("cannot write dead letter, retrying", error=str(exc), retry_in_s=delay)
        raise task.retry(exc=exc, countdown=delay, max_retries=None) from exc
    log.error("dead-lettered", reason=reason, error=error)


def _execute(stage: str, payload: Any) -> dict[str, Any] | None:
    resources = get_resources()
    try:
        if stage != "store":
            return resources.pipeline.run_stage(stage, payload)
        document = finish(payload)
        resources.store.upsert(document)
        log.info(
            "article enriched",
            language=document["language"]["code"],
            entities=len(document["entities"]),
            duplicate_of=document["dedupe"]["duplicate_of"],
            timings_ms=document["pipeline"]["timings_ms"],
        )
        return None
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
        raise IndexUnavailable(f"Redis unavailable: {exc}") from exc


def _run(task, stage: str, payload: Any) -> dict[str, Any] | None:
    try:
        try:
            return _execute(stage, payload)
        except Transient as exc:
            _retry(task, exc)  # raises Retry, or Reject once retries are spent
    except Reject as exc:
        _dead_letter(task, payload, exc.reason, exc.message)
        raise Ignore() from None
    except (Ignore, Retry):
        raise
    except Exception as exc:  # noqa: BLE001 - a bug: park the article, keep the worker
        log.exception("stage failed", error=f"{type(exc).__name__}: {exc}")
        _dead_letter(task, payload, "internal", f"{type(exc).__name__}: {exc}")
        raise Ignore() from None
    return None


@app.task(bind=True, name=TASK_NAMES["clean"])
def clean(self, article: Any) -> dict[str, Any] | None:
    """Validate the raw article, extract and clean its text."""
    return _run(self, "clean", article)


@app.task(bind=True, name=TASK_NAMES["language"])
def language(self, doc: dict[str, Any]) -> dict[str, Any] | None:
    """Detect the language of the cleaned text."""
    return _run(self, "language", doc)


@app.task(bind=True, name=TASK_NAMES["entities"])
def entities(self, doc: dict[str, Any]) -> dict[str, Any] | None:
    """Tag named entities with the language's spaCy model."""
    return _run(self, "entities", doc)


@app.task(bind=True, name=TASK_NAMES["dedupe"])
def dedupe(self, doc: dict[str, Any]) -> dict[str, Any] | None:
    """Exact and near-duplicate check against the shared index."""
    return _run(self, "dedupe", doc)


@app.task(bind=True, name=TASK_NAMES["store"])
def store(self, doc: dict[str, Any]) -> None:
    """Upsert the enriched document by id."""
    return _run(self, "store", doc)
