"""The Celery tasks: every stage of an article in one task. All policy is in `_run` (one
article) and `_run_batch` (several).

`enrich.article(article, start="clean")` runs clean -> language -> entities -> dedupe ->
store in the process that received it. One broker message per article instead of a chain
of five: each hop cost a publish, a pop, an unacked record and an ack (FACTS.md: 0.7-1 ms of
broker work per hop; a 5-task chain reached 0.76 of the in-process speed, one task 0.93),
and the message carries only the raw article, never the growing document. Operators still
see every stage as a task of its own in Flower: worker.stage_events sends a task event per
stage under the stage's name (enrich.clean ... enrich.store), child of the article task.

`enrich.batch([article, ...])` is what `publish` sends when it has several articles at hand:
the same stages for each, the per-message costs (broker, Celery, the store's commit, the
stage events' PUBLISH) paid once per batch; see "several articles in one message" below.

What each error does (worker.errors), at whichever stage it happens: Reject -> dead letter
with that stage and its input, message acked; Transient -> the task is retried with
exponential backoff *from that stage* (the retry message carries the document so far and
`start`), dead letter when retries run out; anything else -> dead letter with reason
`internal` (a bug: the article is kept for replay from that stage).

Poison messages: Redis keeps no delivery count, so a message that kills its pool process
(or hangs it past the hard time limit) is requeued and run again, forever. `_run` counts
deliveries per (task id, retry number) in Redis and dead-letters the message with reason
`too_many_deliveries` once it arrives more than ENRICH_MAX_DELIVERIES times.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from celery import signals
from celery.exceptions import Ignore, Retry
from celery.exceptions import Reject as NotPublished
from celery.worker.request import Request

from worker import deadletter, logs
from worker.app import ARTICLE_TASK, BATCH_TASK, CHAIN, app
from worker.errors import IndexUnavailable, PoisonMessage, Reject, Transient
from worker.pipeline import finish
from worker.resources import get_resources, reset_resources
from worker.settings import get_settings
from worker.stage_events import StageEvents

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
def _tune_malloc(**_: Any) -> None:
    # In the main process, before the pool forks: its children (and those that replace them)
    # inherit the thresholds.
    from worker.memory import tune_malloc

    settings = get_settings()
    applied = tune_malloc(settings.malloc_mmap_threshold, settings.malloc_trim_threshold)
    if any(applied.values()):
        log.debug("malloc thresholds fixed", mmap_threshold=settings.malloc_mmap_threshold,
                  trim_threshold=settings.malloc_trim_threshold)


@signals.worker_init.connect
def _check_delivery_timing(**_: Any) -> None:
    settings = get_settings()
    # Live workers renew the lease of every message they hold (worker/transport.py), so a
    # long task or a retry countdown is not handed out again; what the visibility timeout
    # must outlast is a stalled main process (about 4/5 of it without a renewal).
    if settings.visibility_timeout < MIN_SAFE_VISIBILITY:
        log.warning(
            "visibility timeout under 10 s: a main process that stalls that long (swapping, "
            "a paused container) has its running tasks handed to another worker",
            visibility_timeout=settings.visibility_timeout)
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
    )


@signals.task_postrun.connect
def _clear_task_context(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


# --- delivery counting --------------------------------------------------------------------
MIN_SAFE_VISIBILITY = 10
# A retry that cannot be published (the broker is unreachable as well) is retried in the
# process instead: this many attempts, this many seconds apart.
UNPUBLISHED_RETRY_ATTEMPTS = 5
UNPUBLISHED_RETRY_DELAY = 2.0
DELIVERY_TTL_FACTOR = 4


def delivery_ttl(settings) -> int:
    """How long a delivery count is kept: 4 times the longest gap between two deliveries of
    one message (a hang to the hard time limit, then the lease lapsing and the sweep)."""
    gap = settings.task_time_limit + settings.visibility_timeout + settings.unacked_restore_throttle
    return max(60, DELIVERY_TTL_FACTOR * gap)


def delivery_key(prefix: str, task_id: str, retries: int) -> str:
    return f"{prefix}deliveries:{task_id}:{retries}"


def _count_delivery(task) -> int | None:
    """This message's delivery number (1 the first time), or None if Redis cannot say.

    One Redis command on a first delivery (SET NX with the TTL), two on a redelivery (then
    INCR, which keeps the TTL). Counted per (task id, retry number): a retry is a new
    message and starts again at 1. When Redis does not answer the task runs anyway:
    the count is a guard against poison, and a broker outage is not one.
    """
    task_id = task.request.id
    if not task_id:
        return None
    settings = get_settings()
    key = delivery_key(settings.key_prefix, task_id, task.request.retries or 0)
    ttl = delivery_ttl(settings)
    try:
        client = get_resources().broker_redis
        count = 1 if client.set(key, 1, ex=ttl, nx=True) else client.incr(key)
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
#                                    and pool); hang: sleep until the hard time limit;
#                                    sleep:S: sleep S seconds, then carry on
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
        if self.how.startswith("sleep:"):
            time.sleep(float(self.how.removeprefix("sleep:")))
            return
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
def _backoff(retries: int) -> int:
    """Seconds before retry number ``retries + 1``: 2, 4, 8 ... up to ENRICH_RETRY_BACKOFF_MAX."""
    return min(get_settings().retry_backoff_max, 2 ** (retries + 1))


def _retry(task, exc: Transient, doc: Any, stage: str) -> None:
    """Retry from `stage` with the document as it was before it (no finished stage runs twice)."""
    settings = get_settings()
    retries = task.request.retries
    if retries >= settings.max_retries:
        raise Reject(f"{exc.message} (gave up after {retries + 1} attempts)", reason=exc.reason)
    # The countdown's message is held unacknowledged; its lease is renewed while it waits.
    delay = _backoff(retries)
    log.warning("transient failure, retrying", reason=exc.reason, error=exc.message,
                retry_in_s=delay, attempt=retries + 1)
    raise task.retry(exc=exc, countdown=delay, max_retries=settings.max_retries,
                     args=(doc,), kwargs={"start": stage})


def _park(task, payload: Any, stage: str, reason: str, error: str,
          deliveries: int | None = None) -> None:
    """Write the dead letter (raises redis.RedisError when Redis does not take it)."""
    record = deadletter.entry(
        article_id=_article_id(payload), task=task.name, stage=stage, task_id=task.request.id,
        reason=reason, error=error, payload=payload, attempts=task.request.retries + 1,
        deliveries=deliveries,
    )
    get_resources().dead_letters.add(record)


def _dead_letter(task, payload: Any, stage: str, reason: str, error: str,
                 deliveries: int | None = None) -> None:
    try:
        _park(task, payload, stage, reason, error, deliveries)
    except redis.RedisError as exc:
        # Never ack what we could not park: retry (without limit) until Redis takes it.
        delay = _backoff(task.request.retries)
        log.warning("cannot write dead letter, retrying", error=str(exc), retry_in_s=delay)
        raise task.retry(exc=exc, countdown=delay, max_retries=None,
                         args=(payload,), kwargs={"start": stage}) from exc
    log.error("dead-lettered", reason=reason, error=error)


def _metrics():
    """worker.ops where it is loaded (worker processes), else None (tests, embedded)."""
    return sys.modules.get("worker.ops")


def _execute(stage: str, doc: Any) -> dict[str, Any] | None:
    resources = get_resources()
    try:
        if stage != "store":
            return resources.pipeline.run_stage(stage, doc)
        document = finish(doc)
        resources.store.upsert(document)
        _stored(document)
        return None
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
        raise IndexUnavailable(f"Redis unavailable: {exc}") from exc


def _stored(document: dict[str, Any]) -> None:
    log.info(
        "article enriched",
        language=document["language"]["code"],
        entities=len(document["entities"]),
        duplicate_of=document["dedupe"]["duplicate_of"],
        timings_ms=document["pipeline"]["timings_ms"],
    )
    if (ops := _metrics()) is not None:
        ops.record_stored(document)


def _run(task, payload: Any, start: str) -> None:
    """Every stage from `start` to the store; the policy above for whatever goes wrong."""
    if start not in CHAIN:
        _dead_letter(task, payload, "clean", "invalid_article",
                     f"unknown start stage {str(start)[:50]!r}: one of {', '.join(CHAIN)}")
        raise Ignore()
    events = StageEvents(task, _article_id(payload))
    stage, doc = start, payload
    deliveries: int | None = None
    began, clock = time.time(), time.perf_counter()  # of the current stage
    try:
        deliveries = _count_delivery(task)
        limit = get_settings().max_deliveries
        if deliveries is not None and deliveries > limit:
            raise PoisonMessage(
                f"delivered {deliveries} times, more than ENRICH_MAX_DELIVERIES={limit}: "
                "each earlier delivery killed its worker process, outlived the task time "
                "limit, or lost its worker; not run again")
        for stage in CHAIN[CHAIN.index(start):]:
            structlog.contextvars.bind_contextvars(stage=stage)
            _test_fault(doc, stage, "before", deliveries)
            began, clock = time.time(), time.perf_counter()
            for attempt in range(1, UNPUBLISHED_RETRY_ATTEMPTS + 1):
                try:
                    result = _execute(stage, copy.copy(doc))
                    break
                except Transient as exc:
                    try:
                        _retry(task, exc, doc, stage)  # raises Retry, or Reject when spent
                    except Retry:
                        events.add(stage, "retried", began, time.perf_counter() - clock,
                                   exc.message)
                        raise
                    except NotPublished as failed:
                        # Celery could not publish the retry: the broker is down too (seen
                        # right after a Redis restart). The message is still held, so retry
                        # here, a few times, rather than dead-letter a healthy article.
                        if attempt == UNPUBLISHED_RETRY_ATTEMPTS:
                            raise
                        log.warning("retry not published, retrying in this process",
                                    error=str(failed)[:200], attempt=attempt)
                        time.sleep(UNPUBLISHED_RETRY_DELAY)
            seconds = time.perf_counter() - clock
            events.add(stage, "succeeded", began, seconds)
            if (ops := _metrics()) is not None:
                ops.record_stage(stage, seconds)
            _test_fault(doc, stage, "after", deliveries)
            doc = result
        return None
    except Reject as exc:
        events.add(stage, "failed", began, time.perf_counter() - clock,
                   f"{exc.reason}: {exc.message}")
        _dead_letter(task, doc, stage, exc.reason, exc.message, deliveries)
        raise Ignore() from None
    except (Ignore, Retry):
        raise
    except Exception as exc:  # noqa: BLE001 - a bug: park the article, keep the worker
        log.exception("stage failed", error=f"{type(exc).__name__}: {exc}")
        events.add(stage, "failed", began, time.perf_counter() - clock,
                   f"internal: {type(exc).__name__}")
        _dead_letter(task, doc, stage, "internal", f"{type(exc).__name__}: {exc}", deliveries)
        raise Ignore() from None
    finally:
        events.send()


# --- several articles in one message (enrich.batch) ------------------------------------------
# A batch is the fast path only. Its articles run one after the other through clean,
# language and entities; then the batch's dedupe is one index call (its articles decided in
# order, as one by one) and its store one transaction, and all its stage events go out in
# one message. Whatever goes wrong with one article leaves the others alone:
# - Reject or a bug: that article is dead-lettered (stage and input), as enrich.article does;
# - Transient: that article goes on as its own enrich.article message from the failing
#   stage, as a first retry would (countdown, retries=1), and the single-article policy
#   takes it from there; when the batch's index call or write fails, each of its articles
#   goes on that way (a bug there: each goes on at once, and its own task decides);
# - a batch delivered a second time (its first delivery killed or lost its worker: perhaps a
#   poison article) is split: every article goes on as its own message and is counted there,
#   so one poison article cannot take its batch with it. Articles stored before the crash
#   are stored again (upserts: no second row; the dedupe index knows its own ids).
# Handing an article on must not lose it: when the publish still fails after a few tries
# in this process, the batch message is requeued whole (and split when it comes back).
_HANDOFF_RETRY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5,
                  "interval_max": 1}
_PER_ARTICLE = CHAIN[:CHAIN.index("dedupe")]  # then dedupe and store once for the batch


def _hand_off(task, doc: Any, stage: str, *, countdown: float | None = None,
              retries: int = 0) -> None:
    """Send one article of a batch on as its own enrich.article message, from ``stage``."""
    request = task.request
    queue = (request.delivery_info or {}).get("routing_key") or get_settings().queue
    for attempt in range(1, UNPUBLISHED_RETRY_ATTEMPTS + 1):
        try:
            task.app.send_task(
                ARTICLE_TASK, args=(doc,), kwargs={} if stage == "clean" else {"start": stage},
                countdown=countdown, retries=retries, queue=queue, parent_id=request.id,
                root_id=request.root_id or request.id, retry=True, retry_policy=_HANDOFF_RETRY)
            return
        except Exception as exc:  # noqa: BLE001 - kombu raises several kinds
            if attempt == UNPUBLISHED_RETRY_ATTEMPTS:
                log.error("cannot hand the article on: the whole batch goes back onto the queue",
                          error=f"{type(exc).__name__}: {str(exc)[:200]}")
                # celery's Reject with requeue: the message is put back, not acknowledged.
                raise NotPublished(f"hand-off not published: {exc}", requeue=True) from exc
            log.warning("hand-off not published, trying again", attempt=attempt,
                        error=f"{type(exc).__name__}: {str(exc)[:200]}")
            time.sleep(UNPUBLISHED_RETRY_DELAY)


def _batch_fail(task, doc: Any, stage: str, reason: str, error: str, events: StageEvents,
                began: float, clock: float, deliveries: int | None, shown: str) -> None:
    """Dead-letter one article of a batch; when Redis does not take the dead letter, hand the
    article on (its own task retries the dead letter)."""
    events.add(stage, "failed", began, time.perf_counter() - clock, shown,
               article_id=_article_id(doc))
    try:
        _park(task, doc, stage, reason, error, deliveries)
    except redis.RedisError as exc:
        log.warning("cannot write dead letter: the article goes on as its own task",
                    error=str(exc))
        _hand_off(task, doc, stage)
        return
    log.error("dead-lettered", reason=reason, error=error)


def _retry_alone(task, doc: Any, stage: str, exc: Transient, events: StageEvents,
                 began: float, clock: float, deliveries: int | None) -> None:
    """One article of a batch, failed transiently: on as its own task's first retry."""
    if get_settings().max_retries < 1:
        _batch_fail(task, doc, stage, exc.reason, exc.message, events, began, clock,
                    deliveries, f"{exc.reason}: {exc.message}")
        return
    events.add(stage, "retried", began, time.perf_counter() - clock, exc.message,
               article_id=_article_id(doc))
    log.warning("transient failure, retrying as a task of its own", reason=exc.reason,
                error=exc.message, retry_in_s=_backoff(0), attempt=1,
                article_id=_article_id(doc))
    _hand_off(task, doc, stage, countdown=_backoff(0), retries=1)


def _batch_step_failed(task, docs: list[Any], stage: str, exc: Exception, events: StageEvents,
                       began: float, clock: float, deliveries: int | None) -> None:
    """The batch's index call or write failed: every article of it goes on alone."""
    structlog.contextvars.unbind_contextvars("article_id")
    if isinstance(exc, Transient):
        for doc in docs:
            _retry_alone(task, doc, stage, exc, events, began, clock, deliveries)
        return
    log.warning("batch step failed: each article goes on as a task of its own",
                error=f"{type(exc).__name__}: {str(exc)[:300]}", articles=len(docs))
    for doc in docs:
        _hand_off(task, doc, stage)


def _batch_stages(task, payload: Any, events: StageEvents,
                  deliveries: int | None) -> dict[str, Any] | None:
    """One article of a batch through the stages before dedupe; None when it left the batch."""
    article_id = _article_id(payload)
    structlog.contextvars.bind_contextvars(article_id=article_id)
    doc = payload
    for stage in _PER_ARTICLE:
        structlog.contextvars.bind_contextvars(stage=stage)
        _test_fault(doc, stage, "before", deliveries)
        began, clock = time.time(), time.perf_counter()
        try:
            result = _execute(stage, copy.copy(doc))
        except Transient as exc:
            _retry_alone(task, doc, stage, exc, events, began, clock, deliveries)
            return None
        except Reject as exc:
            _batch_fail(task, doc, stage, exc.reason, exc.message, events, began, clock,
                        deliveries, f"{exc.reason}: {exc.message}")
            return None
        except Exception as exc:  # noqa: BLE001 - a bug: park the article, keep the batch
            log.exception("stage failed", error=f"{type(exc).__name__}: {exc}")
            _batch_fail(task, doc, stage, "internal", f"{type(exc).__name__}: {exc}", events,
                        began, clock, deliveries, f"internal: {type(exc).__name__}")
            return None
        _succeeded(events, stage, began, time.perf_counter() - clock, article_id)
        _test_fault(doc, stage, "after", deliveries)
        doc = result
    return doc


def _succeeded(events: StageEvents, stage: str, began: float, seconds: float,
               article_id: str | None) -> None:
    events.add(stage, "succeeded", began, seconds, article_id=article_id)
    if (ops := _metrics()) is not None:
        ops.record_stage(stage, seconds)


def _dedupe_batch(task, docs: list[dict[str, Any]], events: StageEvents,
                  deliveries: int | None) -> list[dict[str, Any]]:
    """The batch's dedupe: one index call for all its articles, decided in order."""
    structlog.contextvars.bind_contextvars(stage="dedupe")
    structlog.contextvars.unbind_contextvars("article_id")
    for doc in docs:
        _test_fault(doc, "dedupe", "before", deliveries)
    began, clock = time.time(), time.perf_counter()
    try:
        try:
            done = get_resources().pipeline.run_many("dedupe", [copy.copy(d) for d in docs])
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            raise IndexUnavailable(f"Redis unavailable: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - Transient or a bug: each article goes on alone
        _batch_step_failed(task, docs, "dedupe", exc, events, began, clock, deliveries)
        return []
    share = (time.perf_counter() - clock) / len(docs)
    for doc in done:
        _succeeded(events, "dedupe", began, share, _article_id(doc))
        _test_fault(doc, "dedupe", "after", deliveries)
    return done


def _store_batch(task, docs: list[dict[str, Any]], events: StageEvents,
                 deliveries: int | None) -> None:
    """The batch's documents in one transaction."""
    structlog.contextvars.bind_contextvars(stage="store")
    began, clock = time.time(), time.perf_counter()
    ready: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for doc in docs:
        structlog.contextvars.bind_contextvars(article_id=_article_id(doc))
        _test_fault(doc, "store", "before", deliveries)
        try:
            ready.append((doc, finish(doc)))
        except Exception as exc:  # noqa: BLE001 - a bug: park the article, keep the batch
            log.exception("stage failed", error=f"{type(exc).__name__}: {exc}")
            _batch_fail(task, doc, "store", "internal", f"{type(exc).__name__}: {exc}", events,
                        began, clock, deliveries, f"internal: {type(exc).__name__}")
    structlog.contextvars.unbind_contextvars("article_id")
    if not ready:
        return
    try:
        get_resources().store.upsert_many([document for _, document in ready])
    except Exception as exc:  # noqa: BLE001 - StoreUnavailable, or one bad row failed them all
        _batch_step_failed(task, [doc for doc, _ in ready], "store", exc, events, began,
                           clock, deliveries)
        return
    seconds = time.perf_counter() - clock
    for doc, document in ready:
        structlog.contextvars.bind_contextvars(article_id=document["id"])
        _stored(document)
        _succeeded(events, "store", began, seconds, document["id"])
        _test_fault(doc, "store", "after", deliveries)


def _run_batch(task, articles: Any) -> None:
    if not isinstance(articles, list) or not articles:
        _dead_letter(task, articles, "clean", "invalid_article",
                     f"{BATCH_TASK} takes a non-empty list of articles")
        raise Ignore()
    deliveries = _count_delivery(task)
    events = StageEvents(task)
    began, clock = time.time(), time.perf_counter()
    try:
        if deliveries is not None and deliveries > 1:
            log.warning("batch delivered again: each article goes on as a task of its own",
                        deliveries=deliveries, articles=len(articles))
            for payload in articles:
                _hand_off(task, payload, "clean")
        else:
            docs = [doc for payload in articles
                    if (doc := _batch_stages(task, payload, events, deliveries)) is not None]
            if docs:
                docs = _dedupe_batch(task, docs, events, deliveries)
            if docs:
                _store_batch(task, docs, events, deliveries)
        # The batch's own task-succeeded (failures and requeues: BatchRequest, below).
        events.add_task_succeeded(began, time.perf_counter() - clock,
                                  article_ids=[_article_id(a) for a in articles])
    finally:
        structlog.contextvars.unbind_contextvars("article_id", "stage")
        events.send()


class BatchRequest(Request):
    """enrich.batch as its worker's main process sees it: no task events when all is well.

    A batch's own task-received, -started and -succeeded events would cost the main process
    three event messages per batch (a third of its CPU per article); the batch's child sends
    the batch's event with its stage events instead, in the one message it sends anyway. What
    only the main process can tell, or tells anyway - the batch failed or its child died
    under it (task-failed), it was requeued whole (task-rejected) or revoked - is still
    sent from here.
    """

    def send_event(self, type: str, **fields: Any) -> None:
        if type in _MAIN_PROCESS_EVENTS and self._eventer and self._eventer.enabled:
            self._eventer.send(type, uuid=self.id, **fields)


_MAIN_PROCESS_EVENTS = frozenset({"task-failed", "task-rejected", "task-revoked",
                                  "task-retried", "task-cancelled"})


@app.task(bind=True, name=BATCH_TASK, send_events=False, Request=BatchRequest)
def batch(self, articles: Any) -> None:
    """Enrich several articles published together (see above); each stage of each article
    is still its own task in Flower."""
    return _run_batch(self, articles)


@app.task(bind=True, name=ARTICLE_TASK)
def article(self, article: Any, start: str = "clean") -> None:
    """Enrich one article: every stage from `start` (normally clean) to the store."""
    return _run(self, article, start)
