"""Celery tasks: thin wrappers, one per stage, plus the store. All policy is in `_run`.

What each error does (worker.errors): Reject -> dead letter, chain stops, message acked;
Transient -> retry with exponential backoff, dead letter when retries run out; anything
else -> dead letter with reason `internal` (a bug: the article is kept for replay).

Poison messages: Redis keeps no delivery count, so a message that kills its pool process
(or hangs it past the hard time limit) is requeued and run again, forever. `_run` counts
deliveries per (task id, retry number) in Redis and dead-letters the message with reason
`too_many_deliveries` once it arrives more than ENRICH_MAX_DELIVERIES times.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from celery import signals
from celery.exceptions import Ignore, Retry

from worker import deadletter, logs
from worker.app import TASK_NAMES, app
from worker.errors import IndexUnavailable, PoisonMessage, Reject, Transient
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


@signals.worker_init.connect
def _check_delivery_timing(**_: Any) -> None:
    settings = get_settings()
    countdown = _max_countdown(settings)
    if settings.visibility_timeout <= settings.task_time_limit + countdown:
        log.warning(
            "visibility timeout shorter than the longest healthy task: tasks running longer "
            "are delivered again and may be dead-lettered as too_many_deliveries",
            visibility_timeout=settings.visibility_timeout,
            task_time_limit=settings.task_time_limit, longest_retry_countdown=countdown)
    if _TEST_FAULT is not None:
        log.warning("TEST FAULT INJECTION IS ON (ENRICH_TEST_KILL_ON): never in production",
                    fault=repr(_TEST_FAULT))


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


# --- delivery counting --------------------------------------------------------------------
DELIVERY_TTL_FACTOR = 4  # counters live 4 visibility timeouts (at least a minute)


def _max_countdown(settings) -> int:
    """Longest retry countdown. The worker holds a countdown's message unacknowledged; one
    held longer than the visibility timeout is handed to a second worker by Redis (and both
    copies would then run and count as deliveries), so it is kept under half of it."""
    return max(1, min(settings.retry_backoff_max, settings.visibility_timeout // 2))


def delivery_key(prefix: str, task_id: str, retries: int) -> str:
    return f"{prefix}deliveries:{task_id}:{retries}"


def _count_delivery(task) -> int | None:
    """This message's delivery number (1 the first time), or None if Redis cannot say.

    One round trip (INCR + EXPIRE in a MULTI). Counted per (task id, retry number): a retry
    is a new message and starts again at 1. When Redis does not answer the task runs anyway:
    the count is a guard against poison, and a broker outage is not one.
    """
    task_id = task.request.id
    if not task_id:
        return None
    settings = get_settings()
    key = delivery_key(settings.key_prefix, task_id, task.request.retries or 0)
    ttl = max(60, DELIVERY_TTL_FACTOR * settings.visibility_timeout)
    try:
        pipe = get_resources().broker_redis.pipeline(transaction=True)
        count, _ = pipe.incr(key).expire(key, ttl).execute()
    except redis.RedisError as exc:
        log.warning("cannot count this delivery, running it uncounted", error=str(exc))
        return None
    return int(count)


# --- test-only fault injection --------------------------------------------------------------
# OFF unless ENRICH_TEST_KILL_ON is set in the worker's environment. Nothing in deploy/ sets
# it; a worker that has it logs a warning at start. Read once, at import:
#   ENRICH_TEST_KILL_ON=id1,id2      articles whose task harms its own process (* = all)
#   ENRICH_TEST_KILL_STAGE=store     only at this stage (default: every stage)
#   ENRICH_TEST_KILL_WHEN=after      before the stage's work (default) or after it (for the
#                                    store: after the commit, before the ack)
#   ENRICH_TEST_KILL_TIMES=1         only the first N deliveries of each task (default: all)
#   ENRICH_TEST_KILL_HOW=worker      process: SIGKILL the pool process (default); worker:
#                                    SIGKILL the worker's whole process group (main process
#                                    and pool); hang: sleep until the hard time limit
@dataclass(frozen=True)
class _TestFault:
    ids: frozenset[str]
    stage: str | None
    when: str
    times: int | None
    how: str

    @classmethod
    def from_env(cls, env=os.environ) -> _TestFault | None:
        ids = env.get("ENRICH_TEST_KILL_ON")
        if not ids:
            return None
        times = env.get("ENRICH_TEST_KILL_TIMES")
        return cls(ids=frozenset(i.strip() for i in ids.split(",") if i.strip()),
                   stage=env.get("ENRICH_TEST_KILL_STAGE") or None,
                   when=env.get("ENRICH_TEST_KILL_WHEN", "before"),
                   times=int(times) if times else None,
                   how=env.get("ENRICH_TEST_KILL_HOW", "process"))

    def maybe_fire(self, payload: Any, stage: str, when: str, deliveries: int | None) -> None:
        if (when != self.when or ("*" not in self.ids and _article_id(payload) not in self.ids)
                or self.stage not in (None, stage)
                or (self.times is not None and deliveries is not None and deliveries > self.times)):
            return
        log.warning("TEST FAULT: harming this process", how=self.how, deliveries=deliveries)
        if self.how == "hang":
            while True:
                time.sleep(3600)
        if self.how == "worker":
            os.killpg(os.getpgid(0), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


_TEST_FAULT = _TestFault.from_env()


def _test_fault(payload: Any, stage: str, when: str, deliveries: int | None) -> None:
    if _TEST_FAULT is not None:
        _TEST_FAULT.maybe_fire(payload, stage, when, deliveries)


# --- error policy ---------------------------------------------------------------------------
def _retry(task, exc: Transient) -> None:
    settings = get_settings()
    retries = task.request.retries
    if retries >= settings.max_retries:
        raise Reject(f"{exc.message} (gave up after {retries + 1} attempts)", reason=exc.reason)
    delay = min(_max_countdown(settings), 2 ** (retries + 1))
    log.warning("transient failure, retrying", reason=exc.reason, error=exc.message,
                retry_in_s=delay, attempt=retries + 1)
    raise task.retry(exc=exc, countdown=delay, max_retries=settings.max_retries)


def _dead_letter(task, payload: Any, reason: str, error: str,
                 deliveries: int | None = None) -> None:
    record = deadletter.entry(
        article_id=_article_id(payload), task=task.name, task_id=task.request.id,
        reason=reason, error=error, payload=payload, attempts=task.request.retries + 1,
        deliveries=deliveries,
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
    deliveries: int | None = None
    try:
        deliveries = _count_delivery(task)
        limit = get_settings().max_deliveries
        if deliveries is not None and deliveries > limit:
            raise PoisonMessage(
                f"delivered {deliveries} times, more than ENRICH_MAX_DELIVERIES={limit}: "
                "each earlier delivery killed its worker process, outlived the task time "
                "limit, or lost its worker; not run again")
        _test_fault(payload, stage, "before", deliveries)
        try:
            result = _execute(stage, payload)
        except Transient as exc:
            _retry(task, exc)  # raises Retry, or Reject once retries are spent
        _test_fault(payload, stage, "after", deliveries)
        return result
    except Reject as exc:
        _dead_letter(task, payload, exc.reason, exc.message, deliveries)
        raise Ignore() from None
    except (Ignore, Retry):
        raise
    except Exception as exc:  # noqa: BLE001 - a bug: park the article, keep the worker
        log.exception("stage failed", error=f"{type(exc).__name__}: {exc}")
        _dead_letter(task, payload, "internal", f"{type(exc).__name__}: {exc}", deliveries)
        raise Ignore() from None


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
