"""The ledger battery: inject one fault into real workers, then count every article.

For each fault: real `enrich worker` processes (prefork, concurrency 2) on a queue and key
prefix of their own on ENRICH_BROKER_URL's Redis (a private redis-server for the broker
faults), a temporary SQLite store (or --store-url; a PostgreSQL store gets a schema of its
own per fault, dropped afterwards), articles published, and then the ledger once every
article is settled (stored or dead-lettered), nothing more can happen, or the time is up:

  published, stored, dead-lettered, lost (neither), stored twice (more than one row for an
  id; for near_duplicates: pairs not decided one canonical + one duplicate of it),
  executions per article (the store's `writes`: min/median/max), redelivery seconds (kill
  -> the killed task's message deliverable again; per fault below), recovery seconds (per
  fault, below), peak RSS of any worker process (VmHWM, MB), wall seconds of the fault.

Every ledger also checks that each worker is still running at the end, except the ones the
fault stopped or killed on purpose.

Faults are injected through the test-only hooks in worker/tasks.py (ENRICH_TEST_KILL_*),
signals to worker processes, a TCP proxy for the store (worker/faults/proxy.py), a private
redis-server (worker/faults/redis_server.py) and concurrent publishing. The machine's
PostgreSQL and Redis are never stopped, paused or cut.

Worker settings (visibility timeout, sweep throttle, delivery limit...) come from the
environment like any worker's, so the rows measure the redelivery the code and settings
give; only `outlives_visibility` shortens the visibility timeout, to outlive it quickly.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from worker.faults import redis_server
from worker.faults.harness import event_time
from worker.faults.proxy import TcpProxy
from worker.faults.world import (  # noqa: F401 - re-exported for tests and callers
    COLUMNS, Ledger, Run, article_text, near_copy, short_text, table)
from worker.settings import Settings


def _worst_recovery(run: Run) -> float | None:
    faults, settled = run.fault_times(), run.settle_times()
    gaps = [settled[a] - t for a, t in faults.items() if a in settled]
    return max(gaps) if gaps else None


def _sweep_wait(run: Run) -> float:
    """Longest a dead worker's message waits before a sweep puts it back."""
    return run.settings.visibility_timeout + run.settings.unacked_restore_throttle


def _ids(run: Run, n: int) -> list[str]:
    return [f"{run.prefix}-{i}" for i in range(n)]


def _mid_flood(run: Run, n: int, timeout: float) -> None:
    """Wait until worker 0 has been at it a while (a tenth of n messages received, at least
    5) and more messages wait on the queue, so it holds as many as it may (prefetch). Not
    "n/4 stored": with a chain of tasks per article, stores come last, when the queue is
    nearly drained."""
    run.wait(lambda: sum(map(len, run.received([0]).values())) >= max(5, n // 10)
             and run.redis.llen(run.settings.queue), timeout)


# --- processes killed ---------------------------------------------------------------------
def sigkill_child(run: Run, n: int, timeout: float, kills: int | None = None) -> Ledger:
    """SIGKILL of the pool process in the middle of an article (its entities stage), once
    each for `kills` articles spread over the run (default: every article): requeued at
    once, run again, stored once. Redelivery: worst kill -> message back on the queue;
    recovery: worst kill -> that article stored."""
    ids = _ids(run, n)
    kills = min(kills or n, n)
    step = n // kills
    doomed = ids[step - 1::step][:kills]
    run.worker(env={"ENRICH_TEST_KILL_ON": "*" if kills == n else ",".join(doomed),
                    "ENRICH_TEST_KILL_STAGE": "entities", "ENRICH_TEST_KILL_TIMES": "1"})
    run.publish(run.articles(n))
    run.settle(ids, timeout)
    fired, received = run.faults_fired(), run.received()
    requeued = run.requeued(fired)
    back = [run.redelivery(task, at, received, requeued) for _, task, at in fired]
    rerun = [min(later) - at for _, task, at in fired
             if (later := [t for t in received.get(task, []) if t > at])]
    ledger = run.ledger(ids, recovery_s=_worst_recovery(run),
                        redelivery_s=max((b for b in back if b is not None), default=None),
                        notes=f"{len(fired)} pool processes killed; taken again after "
                              f"<= {max(rerun, default=0):.0f} s (requeued at the back)")
    if len(fired) != kills:
        ledger.fail(f"{len(fired)} kills fired, {kills} planned")
    if None in back:
        ledger.fail(f"{back.count(None)} killed tasks never delivered again")
    return ledger


def worker_kill(run: Run, n: int, timeout: float, workers: int = 3) -> Ledger:
    """SIGKILL of one whole worker (main process and pool) of three, mid-flood: the others
    carry on, and a sweep puts what it held back on the queue once older than the
    visibility timeout. Redelivery: kill -> the last of its messages received by another
    worker; recovery: kill -> the last of its articles stored."""
    for _ in range(workers):
        run.worker()
    articles = run.articles(n)
    ids = [a["id"] for a in articles]
    publisher = run.publish_in_background(articles)
    _mid_flood(run, n, timeout)
    killed = run.kill_worker(0)
    # Its messages stay unacknowledged; the others' of the moment are acked within ms and
    # never received again. (A snapshot before the kill misses what it took meanwhile.)
    held = run.unacked_now()
    publisher.join()
    run.settle(ids, timeout + _sweep_wait(run))
    back = _redelivered(run, held, killed)
    settled = run.settle_times()
    recovered = [settled[held[task]] - killed for task in back if held[task] in settled]
    ledger = run.ledger(
        ids, expect_writes=None, redelivery_s=max(back.values(), default=None),
        recovery_s=max(recovered, default=None),
        notes=f"1 of {workers} workers killed holding {len(back)} messages; visibility "
              f"{run.settings.visibility_timeout} s, sweep every "
              f"{run.settings.unacked_restore_throttle} s")
    if not back:
        ledger.fail("the killed worker held no message: nothing was redelivered")
    return ledger


def worker_lost(run: Run, n: int, timeout: float) -> Ledger:
    """A whole worker (main process and pool) is SIGKILLed after a store commit, before the
    ack; a second worker sweeps its unacknowledged messages back after the visibility
    timeout. Redelivery: kill -> received by the second worker; recovery: kill -> that
    article stored again."""
    ids = _ids(run, n)
    # The last article: by then the pool is warm (a cold model load can outlive a short
    # visibility timeout and make Redis hand a task out twice).
    doomed = run.worker(env={"ENRICH_TEST_KILL_ON": ids[-1], "ENRICH_TEST_KILL_STAGE": "store",
                             "ENRICH_TEST_KILL_WHEN": "after", "ENRICH_TEST_KILL_HOW": "worker",
                             "ENRICH_TEST_KILL_TIMES": "1"})
    run.stopped.add(0)
    run.publish(run.articles(n))
    run.wait(lambda: doomed.poll() is not None, timeout)
    run.worker()  # the survivor: its sweep brings back what the dead worker held
    wait = timeout + _sweep_wait(run)
    run.settle(ids, wait)
    run.wait(lambda: run.rows().get(ids[-1], (0,))[0] >= 2, wait)
    received = run.received([1])
    back = [run.redelivery(task, at, received, {}) for _, task, at in run.faults_fired()]
    ledger = run.ledger(ids, recovery_s=_worst_recovery(run), expect_writes=None,
                        redelivery_s=max((b for b in back if b is not None), default=None),
                        notes=f"visibility {run.settings.visibility_timeout} s, sweep every "
                              f"{run.settings.unacked_restore_throttle} s")
    if run.rows().get(ids[-1], (0,))[0] != 2:
        ledger.fail("the killed worker's store task was not run again")
    return ledger


def _redelivered(run: Run, held: dict[str, str | None], moment: float) -> dict[str, float]:
    """Task id -> seconds from `moment` until a worker received it again, for the messages
    held unacknowledged at that moment that came back (the others were simply acked). Its
    first "received" line never counts: Redis records a message as unacknowledged a moment
    before the worker logs it."""
    received = run.received()
    return {task: min(later) - moment for task in held
            if (later := [t for t in sorted(received.get(task, []))[1:] if t > moment])}


def _after(run: Run, moment: float) -> float | None:
    first = run.stores_after(moment)
    return first[0] - moment if first else None


def _run_twice(run: Run) -> int:
    return sum(1 for writes, _ in run.rows().values() if writes > 1)


def _one_worker_mid_flood(run: Run, n: int, timeout: float) -> tuple[list[str], dict]:
    """One worker, n articles published, waited until mid-flood: (ids, messages held now)."""
    ids = _ids(run, n)
    run.worker()
    run.publish(run.articles(n))
    _mid_flood(run, n, timeout)
    return ids, run.unacked_now()


def sigterm_restart(run: Run, n: int, timeout: float) -> Ledger:
    """Warm shutdown (SIGTERM) of the only worker mid-flood, then a new worker: what was
    running finishes, what was held goes back on the queue, the new worker stores the rest;
    one document each (a message put back while its task still ran is executed twice:
    counted in the notes). Redelivery: SIGTERM -> the last held message received again;
    recovery: the new worker ready -> its first article stored."""
    ids, held = _one_worker_mid_flood(run, n, timeout)
    sent = time.time()
    run.stopped.add(0)
    run.workers[0].send_signal(signal.SIGTERM)
    try:
        code: int | None = run.workers[0].wait(timeout=120)
    except subprocess.TimeoutExpired:
        code = None
    shutdown_s = time.time() - sent
    run.worker()
    ready = time.time()
    run.settle(ids, timeout)
    back = _redelivered(run, held, sent)
    ledger = run.ledger(ids, recovery_s=_after(run, ready), expect_writes=None,
                        redelivery_s=max(back.values(), default=None),
                        notes=f"warm shutdown {shutdown_s:.1f} s, exit {code}; held "
                              f"{len(held)}, redelivered {len(back)}; "
                              f"{_run_twice(run)} run twice")
    if code != 0:
        ledger.fail(f"warm shutdown did not exit 0 within 120 s (exit {code})")
    return ledger


def crash_after_commit(run: Run, n: int, timeout: float) -> Ledger:
    """The pool process dies after the store committed, before the ack: the store task runs
    again (writes = 2), one row per article. Recovery: worst crash -> second store."""
    ids = _ids(run, n)
    run.worker(env={"ENRICH_TEST_KILL_ON": "*", "ENRICH_TEST_KILL_STAGE": "store",
                    "ENRICH_TEST_KILL_WHEN": "after", "ENRICH_TEST_KILL_TIMES": "1"})
    run.publish(run.articles(n))
    run.settle(ids, timeout)
    # settled as soon as the first write is there: wait for the re-run too
    run.wait(lambda: all(w >= 2 for w, _ in run.rows().values()) and len(run.rows()) == n,
             timeout)
    fired, received = run.faults_fired(), run.received()
    requeued = run.requeued(fired)
    back = [run.redelivery(task, at, received, requeued) for _, task, at in fired]
    return run.ledger(ids, recovery_s=_worst_recovery(run), expect_writes=2,
                      redelivery_s=max((b for b in back if b is not None), default=None),
                      notes="store re-run after each crash")


def poison(run: Run, n: int, timeout: float) -> Ledger:
    """One article kills its pool process on every delivery: its batch, delivered again, is
    split into one message per article; the poison article alone is dead-lettered as
    too_many_deliveries after ENRICH_MAX_DELIVERIES, the rest stored, no endless loop.
    Recovery: first kill -> dead letter."""
    run.batch_size = None  # in batches, as production publishes
    ids = _ids(run, n)
    run.worker(env={"ENRICH_TEST_KILL_ON": ids[0]})
    run.publish(run.articles(n))
    run.settle(ids, timeout)
    dead = run.dead_ids().get(ids[0], [{}])
    return run.ledger(ids, recovery_s=_worst_recovery(run), expect_dead=1,
                      notes=f"poison: {dead[0].get('reason')} after "
                            f"{dead[0].get('deliveries')} deliveries, "
                            f"{len(run.faults_fired())} kills")


def outlives_visibility(run: Run, n: int, timeout: float, sleep_s: float | None = None,
                        ) -> Ledger:
    """One article's task outlives the visibility timeout, then finishes (a test hook,
    ENRICH_TEST_KILL_HOW=sleep:S, sleeps in its entities stage): Redis may hand its message
    to another process meanwhile (extra executions), the article is still one document,
    never a duplicate of itself. Redelivery: first delivery -> second (none if the worker
    keeps its message); recovery: sleep over -> the slow article's last write."""
    settings = run.settings
    sleep_s = sleep_s or settings.visibility_timeout + settings.unacked_restore_throttle + 5
    ids = _ids(run, n)
    slow = ids[-1]
    run.worker(env={"ENRICH_TEST_KILL_ON": slow, "ENRICH_TEST_KILL_STAGE": "entities",
                    "ENRICH_TEST_KILL_HOW": f"sleep:{sleep_s:g}", "ENRICH_TEST_KILL_TIMES": "1"})
    articles = run.articles(n)
    # The others first, so no message waits behind a cold model load past the short timeout.
    run.publish(articles[:-1])
    run.settle(ids[:-1], timeout)
    run.publish(articles[-1:])
    run.wait(lambda: run.faults_fired(), timeout)
    fired = run.faults_fired()
    slept_until = (fired[0][2] if fired else time.time()) + sleep_s
    run.settle(ids, timeout)
    # the sleeping execution writes after its sleep (and after any redelivered copy)
    run.wait(lambda: time.time() > slept_until and run.idle(), timeout + sleep_s)
    task = fired[0][1] if fired else "?"
    deliveries = sorted(run.received().get(task, []))
    writes = run.rows().get(slow, (0, None))
    last_write = max((event_time(e) for e in run.events()
                      if e.get("event") == "article enriched" and e.get("article_id") == slow),
                     default=None)
    ledger = run.ledger(
        ids, expect_writes=None,
        redelivery_s=deliveries[1] - deliveries[0] if len(deliveries) > 1 else None,
        recovery_s=last_write - slept_until if last_write else None,
        notes=f"visibility {settings.visibility_timeout} s, task slept {sleep_s:g} s: "
              f"delivered {len(deliveries)}x, stored {writes[0]}x")
    if not fired:
        ledger.fail("the slow task never started")
    if writes[1] == slow:
        ledger.fail("the slow article was marked a duplicate of itself")
    if run.pool_processes_killed():
        ledger.fail("a pool process was killed instead of sleeping: does worker/tasks.py "
                    "know ENRICH_TEST_KILL_HOW=sleep:SECONDS?")
    return ledger


# --- the broker (a private redis-server) -------------------------------------------------
def _broker_fault(run: Run, n: int, timeout: float, inject: Callable[[Run], str]) -> Ledger:
    """One worker mid-flood on the private Redis, `inject` the fault. Redelivery: fault ->
    the last message held at that moment received again; recovery: fault over -> first
    article stored after it. Extra executions are allowed (a message put back on
    reconnection while its task still runs is run twice) and counted in the notes."""
    ids, held = _one_worker_mid_flood(run, n, timeout)
    started = time.time()
    notes = inject(run)
    over = time.time()
    # held messages the worker could not put back wait for a sweep
    run.settle(ids, timeout + _sweep_wait(run))
    back = _redelivered(run, held, started)
    ledger = run.ledger(ids, expect_writes=None, recovery_s=_after(run, over),
                        redelivery_s=max(back.values(), default=None),
                        notes=f"{notes}; held {len(held)}, redelivered {len(back)}; "
                              f"{_run_twice(run)} run twice")
    return ledger


def redis_restart(run: Run, n: int, timeout: float, down_s: float = 2.0) -> Ledger:
    """The broker's Redis (private, AOF on) shut down mid-flood and started again `down_s`
    later: the worker reconnects and carries on."""
    def inject(run: Run) -> str:
        run.redis_server.stop()
        time.sleep(down_s)
        run.redis_server.start()
        return f"Redis down {down_s:g} s"

    return _broker_fault(run, n, timeout, inject)


def redis_client_kill(run: Run, n: int, timeout: float, rounds: int = 3) -> Ledger:
    """Every client connection of the broker's Redis (private) killed mid-flood (CLIENT KILL
    TYPE normal and pubsub), `rounds` times a second apart: the worker reconnects, nothing
    hangs."""
    def inject(run: Run) -> str:
        admin = run.redis_server.client()
        killed = 0
        for round_ in range(rounds):
            if round_:
                time.sleep(1)
            killed += admin.client_kill_filter(_type="normal", skipme=True)
            killed += admin.client_kill_filter(_type="pubsub")
        admin.close()
        return f"{rounds} rounds, {killed} connections killed"

    return _broker_fault(run, n, timeout, inject)


def redis_pause(run: Run, n: int, timeout: float, pause_s: float = 3.0) -> Ledger:
    """The broker's Redis (private) paused for every client (CLIENT PAUSE ALL) mid-flood:
    the worker waits it out and resumes, nothing hangs."""
    def inject(run: Run) -> str:
        admin = run.redis_server.client()
        admin.client_pause(int(pause_s * 1000), all=True)
        admin.close()
        time.sleep(pause_s)
        return f"paused {pause_s:g} s"

    return _broker_fault(run, n, timeout, inject)


# --- the store --------------------------------------------------------------------------------
def store_unavailable(run: Run, n: int, timeout: float, outage_s: float = 6.0) -> Ledger:
    """PostgreSQL unreachable for `outage_s` mid-run (a proxy in front of it is cut; the
    server itself is never stopped): store tasks retry with backoff, no dead-letter flood,
    all stored once. Recovery: store reachable again -> all settled."""
    url = urlsplit(run.settings.store_url)
    if url.scheme not in ("postgresql", "postgres"):
        return Ledger(run.fault, 0, 0, 0, 0, 0, "-", None, None,
                      notes="skipped: needs a PostgreSQL store (--store-url postgresql://...)")
    run.store.count()  # schema created before the outage
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 5432)
    netloc = url.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    proxied = urlunsplit(url._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
    try:
        run.worker(settings=run.settings.model_copy(update={"store_url": proxied}))
        articles = run.articles(n)
        ids = run.publish(articles[:1])  # the worker's store connection is open ...
        run.settle(ids, timeout)
        proxy.cut()  # ... and goes down with the rest of the articles on their way
        ids += run.publish(articles[1:])
        time.sleep(outage_s)
        proxy.restore()
        restored = time.time()
        run.settle(ids, timeout)
        settled = max(run.settle_times().values(), default=restored)
        retries = sum(1 for e in run.events() if e.get("event") == "transient failure, retrying")
        ledger = run.ledger(ids, recovery_s=max(0.0, settled - restored),
                            notes=f"outage {outage_s:g} s, {retries} retries")
        if not retries:
            ledger.fail("no store task met the outage")
        return ledger
    finally:
        proxy.close()


# --- publishing -------------------------------------------------------------------------------
def _concurrently(*calls: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run_one(index: int) -> None:
        barrier.wait()
        results[index] = calls[index]()

    threads = [threading.Thread(target=run_one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def publish_twice(run: Run, n: int, timeout: float) -> Ledger:
    """The same articles published twice at the same instant (two producers): one row each,
    two executions, never a duplicate of itself. Recovery: publish -> all settled."""
    run.batch_size = None  # in batches, as production publishes
    run.worker()
    articles = run.articles(n)
    started = time.time()
    first, second = _concurrently(lambda: run.publish(articles), lambda: run.publish(articles))
    ids = first
    run.settle(ids, timeout)
    run.wait(lambda: sum(w for w, _ in run.rows().values()) >= 2 * n or run.idle(), timeout)
    rows = run.rows()
    self_duplicates = sum(1 for i in ids if rows.get(i, (0, None))[1] == i)
    settled = max(run.settle_times().values(), default=started)
    ledger = run.ledger(ids, recovery_s=settled - started, expect_writes=2,
                        published=len(first) + len(second),
                        notes=f"{len(ids)} ids x2; duplicate of itself: {self_duplicates}")
    if self_duplicates:
        ledger.fail(f"{self_duplicates} marked duplicate of themselves")
    return ledger


def near_duplicates(run: Run, n: int, timeout: float) -> Ledger:
    """N pairs of near-duplicates, the two of a pair published at the same instant: each
    pair decided one canonical + one duplicate of it ("stored twice" = pairs decided
    otherwise). Recovery: publish -> all settled."""
    run.batch_size = None  # in batches, as production publishes
    run.worker()
    pairs = []
    for i in range(n):
        text = article_text(50_000 + i)
        pairs.append(({"id": f"{run.prefix}-{i}a", "text": text},
                      {"id": f"{run.prefix}-{i}b", "text": near_copy(text)}))
    started = time.time()
    _concurrently(lambda: run.publish([a for a, _ in pairs]),
                  lambda: run.publish([b for _, b in pairs]))
    ids = [article["id"] for pair in pairs for article in pair]
    run.settle(ids, timeout)
    rows = run.rows()
    undecided = 0
    for a, b in pairs:
        if a["id"] not in rows or b["id"] not in rows:
            continue
        of_a, of_b = rows[a["id"]][1], rows[b["id"]][1]
        if not ((of_a is None and of_b == a["id"]) or (of_b is None and of_a == b["id"])):
            undecided += 1
    settled = max(run.settle_times().values(), default=started)
    return run.ledger(ids, recovery_s=settled - started, stored_twice=undecided,
                      notes=f"{n} pairs at the same instant")


MEMORY_JUDGED_FROM = 2000  # articles: fewer drain before every pool process is warm


def flood(run: Run, n: int, timeout: float, workers: int = 3) -> Ledger:
    """n one-sentence articles published as fast as one producer goes, onto three workers:
    the queue drains fully and memory stays bounded: each worker's PSS (main process and
    pool) at the end of the drain within 1.25x of its PSS half-way through (judged from
    2,000 articles on). Recovery: first publish -> all settled (the drain)."""
    run.batch_size = None  # in batches, as production publishes
    for _ in range(workers):
        run.worker()
    articles = run.articles(n, short=True)
    ids = [a["id"] for a in articles]
    started = time.time()
    run.publish_in_background(articles).join()
    published = time.time() - started
    settled = run.settle(ids, timeout)
    depth = run.redis.llen(run.settings.queue)
    half = started + ((settled or time.time()) - started) / 2
    peaks, growths, problems = [], [], []
    for index in range(workers):
        samples = run.memory.get(index) or [(started, 0.0)]
        at_half = next((mb for t, mb in samples if t >= half), samples[-1][1])
        peaks.append(max(mb for _, mb in samples))
        growths.append(samples[-1][1] - at_half)
        if n >= MEMORY_JUDGED_FROM and samples[-1][1] > 1.25 * at_half:
            problems.append(f"worker {index} PSS grew {at_half:.0f} -> {samples[-1][1]:.0f} "
                            "MB over the second half of the drain")
    drain = (settled - started) if settled else None
    ledger = run.ledger(
        ids, recovery_s=drain,
        notes=f"{workers} workers; published in {published:.0f} s; "
              + (f"{n / drain:.0f} articles/s; " if drain else "")
              + "PSS per worker MB: peak " + "/".join(f"{p:.0f}" for p in peaks)
              + ", second half of the drain " + "/".join(f"{g:+.0f}" for g in growths)
              + ("" if n >= MEMORY_JUDGED_FROM else " (not judged: too few articles)"))
    if depth:
        ledger.fail(f"{depth} messages still on the queue")
    for problem in problems:
        ledger.fail(problem)
    return ledger


# --- the registry -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    run: Callable[..., Ledger]
    small: int  # articles (pairs for the pair faults) by default
    full: int  # --full
    small_params: dict[str, Any] = field(default_factory=dict)
    full_params: dict[str, Any] = field(default_factory=dict)
    private_redis: bool = False
    settings: Callable[[Settings], dict[str, Any]] | None = None  # per-fault overrides


def _short_visibility(base: Settings) -> dict[str, Any]:
    return {"visibility_timeout": min(base.visibility_timeout, 20),
            "unacked_restore_throttle": min(base.unacked_restore_throttle, 2)}


# In the order. --full uses the counts where it gives one (1,000 articles
# with repeated kills, 1,000 pairs published twice, 500 near-duplicate pairs) except the
# flood, 10,000 instead of 20,000: the whole --full run took 611 and 778 s here (shared
# 2-core machine, 5 tasks per article); with --count flood=20000, 1,011 s (the flood
# alone 479 s), over the 15 minutes it must fit in.
FAULTS: dict[str, Fault] = {
    "sigkill_child": Fault(sigkill_child, 3, 1000, full_params={"kills": 20}),
    "worker_kill": Fault(worker_kill, 30, 300),
    "worker_lost": Fault(worker_lost, 6, 12),
    "sigterm_restart": Fault(sigterm_restart, 12, 300),
    "poison": Fault(poison, 6, 20),
    "crash_after_commit": Fault(crash_after_commit, 3, 12),
    "outlives_visibility": Fault(outlives_visibility, 3, 12, settings=_short_visibility),
    "redis_restart": Fault(redis_restart, 24, 300, private_redis=True),
    "redis_client_kill": Fault(redis_client_kill, 24, 300, private_redis=True),
    "redis_pause": Fault(redis_pause, 24, 300, full_params={"pause_s": 15},
                         private_redis=True),
    "store_unavailable": Fault(store_unavailable, 4, 100, full_params={"outage_s": 30}),
    "publish_twice": Fault(publish_twice, 3, 1000),
    "near_duplicates": Fault(near_duplicates, 3, 500),
    "flood": Fault(flood, 300, 20_000),
}


def run_fault(name: str, base: Settings, *, articles: int | None = None, full: bool = False,
              timeout: float | None = None, store_url: str | None = None,
              workdir: Path | None = None) -> Ledger:
    """Run one fault in a world of its own and return its ledger (workers stopped, keys
    removed; a temporary SQLite store unless store_url is given)."""
    fault = FAULTS[name]
    started = time.monotonic()
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="enrich-faults-")) if own_dir else workdir
    overrides = fault.settings(base) if fault.settings else {}
    server = None
    keep = False  # a fault that found a problem keeps its workers' logs for whoever looks
    try:
        if fault.private_redis:
            if not redis_server.available():
                return Ledger(name, 0, 0, 0, 0, 0, "-", None, None,
                              notes="skipped: redis-server is not installed")
            server = redis_server.PrivateRedis(root / name / "redis")
            overrides |= {"broker_url": server.url, "redis_url": None}
        run = Run(name, base, root, store_url=store_url, **overrides)
        run.redis_server = server
        try:
            ledger = fault.run(run, articles or (fault.full if full else fault.small),
                               timeout or (900 if full else 180),
                               **(fault.full_params if full else fault.small_params))
        finally:
            run.close()
        ledger.wall_s = round(time.monotonic() - started, 1)
        if ledger.problems and own_dir:
            keep = True
            ledger.notes = f"{ledger.notes}; worker logs kept in {root / name}"
        return ledger
    finally:
        if server is not None:
            server.close()
        if own_dir and not keep:
            shutil.rmtree(root, ignore_errors=True)
