"""The ledger battery: inject one fault into real workers, then count every article.

For each fault: real `enrich worker` processes (prefork, concurrency 2) on a queue and key
prefix of their own on ENRICH_BROKER_URL's Redis, a temporary SQLite store (or
--store-url), N generated articles published, and then the ledger once every article is
settled (stored or dead-lettered) or the time is up:

  published, stored, dead-lettered, lost (neither), stored twice (more than one row for an
  id; for near_duplicates: pairs not decided one canonical + one duplicate of it),
  executions per article (the store's `writes`: min/median/max), recovery seconds (per
  fault, below), peak RSS of any worker process (VmHWM, MB).

Faults are injected through the test-only hooks in worker/tasks.py (ENRICH_TEST_KILL_*),
a TCP proxy for the store (worker/faults/proxy.py), and concurrent publishing. The machine's
PostgreSQL is never stopped: `store_unavailable` cuts a proxy in front of it.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from worker.bench import proc
from worker.deadletter import DeadLetters
from worker.faults.harness import event_time, log_events, start_worker, stop_worker
from worker.faults.proxy import TcpProxy
from worker.settings import Settings

WORDS = ("council harbour minister budget river storm election school railway museum hospital "
         "market farmers bridge festival court police energy prices workers village coast "
         "teachers nurses drivers library ferry airport factory union mayor parliament "
         "village weather flood harvest tourism fishing housing rents students exams bus "
         "cyclists museum theatre orchestra football league stadium charity volunteers "
         "scientists telescope glacier forest wildfire drought reservoir pipeline turbine").split()


def article_text(seed: int, sentences: int = 10) -> str:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(14)).capitalize() + "."
             for _ in range(sentences)]
    return f"Report {seed} from the regional desk. " + " ".join(lines)


def near_copy(text: str) -> str:
    """The same story with one sentence dropped and a new first line."""
    first, *sentences = text.split(". ")
    del sentences[len(sentences) // 2]
    return "Updated: " + first + ". " + ". ".join(sentences)


@dataclass
class Ledger:
    fault: str
    published: int
    stored: int
    dead_lettered: int
    lost: int
    stored_twice: int
    executions: str
    recovery_s: float | None
    peak_rss_mb: float | None
    notes: str = ""
    ok: bool = True
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = ("fault", "published", "stored", "dead-lettered", "lost", "stored twice",
           "executions/article", "recovery s", "peak RSS MB", "notes")


def table(ledgers: list[Ledger]) -> str:
    rows = [COLUMNS] + [(
        lg.fault, str(lg.published), str(lg.stored), str(lg.dead_lettered), str(lg.lost),
        str(lg.stored_twice), lg.executions,
        "-" if lg.recovery_s is None else f"{lg.recovery_s:.1f}",
        "-" if lg.peak_rss_mb is None else f"{lg.peak_rss_mb:.0f}", lg.notes)
        for lg in ledgers]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Run:
    """One fault's world: own queue, key prefix, store, workers and logs."""

    def __init__(self, fault: str, base: Settings, workdir: Path, *,
                 store_url: str | None = None, **overrides: Any) -> None:
        self.fault = fault
        uid = uuid.uuid4().hex[:10]
        self.prefix = f"faults-{uid}"
        self.workdir = workdir / fault
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.settings = base.model_copy(update={
            "queue": f"faults-{uid}", "key_prefix": f"faults:{uid}:",
            "store_url": store_url or f"sqlite:///{self.workdir / 'store.db'}",
            "log_format": "json", **overrides})
        self.redis = redis.Redis.from_url(self.settings.broker_url)
        self.dead = DeadLetters(self.redis, self.settings.dead_letter_key)
        self.workers: list[Any] = []
        self.logs: list[Path] = []
        self.peak_rss = 0.0
        self._sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self._store = None

    @property
    def store(self):
        if self._store is None:
            from worker.store import open_store

            self._store = open_store(self.settings.store_url)
        return self._store

    def _sample(self) -> None:
        while not self._sampling.wait(0.5):
            for worker in list(self.workers):
                for pid in proc.group_pids(worker.pid):
                    self.peak_rss = max(self.peak_rss, _hwm_mb(pid))

    def worker(self, env: dict[str, str] | None = None, concurrency: int = 2,
               settings: Settings | None = None, ready_timeout: float = 60):
        """Start a worker and wait until it consumes (its "ready." line)."""
        log = self.workdir / f"worker-{len(self.workers)}.log"
        process = start_worker(settings or self.settings, log, env=env,
                               concurrency=concurrency,
                               hostname=f"{self.fault}-{len(self.workers)}@%h")
        self.workers.append(process)
        self.logs.append(log)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline and process.poll() is None:
            if any(str(e.get("event", "")).endswith(" ready.") for e in log_events(log)):
                break
            time.sleep(0.2)
        return process

    def articles(self, n: int, seed: int = 0) -> list[dict[str, Any]]:
        return [{"id": f"{self.prefix}-{i}", "text": article_text(seed * 10_000 + i)}
                for i in range(n)]

    def publish(self, articles: list[dict[str, Any]]) -> list[str]:
        from worker.producer import publish

        report = publish(articles, settings=self.settings)
        if report.rejected:
            raise RuntimeError(f"battery articles rejected: {report.rejected[:3]}")
        return report.published

    def dead_ids(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for entry in self.dead.list():
            found.setdefault(entry.get("id") or "?", []).append(entry)
        return found

    def unsettled(self, ids: list[str]) -> list[str]:
        dead = self.dead_ids()
        return [i for i in ids if i not in dead and self.store.get(i) is None]

    def settle(self, ids: list[str], timeout: float) -> float | None:
        """Wall time at which every id was stored or dead-lettered (None: time ran out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.unsettled(ids):
                return time.time()
            time.sleep(0.25)
        return None

    def events(self) -> list[dict[str, Any]]:
        return [event for log in self.logs for event in log_events(log)]

    def fault_times(self) -> dict[str, float]:
        """First injected fault per article (wall time)."""
        first: dict[str, float] = {}
        for event in self.events():
            if event.get("event") == "TEST FAULT: harming this process":
                article = event.get("article_id") or "?"
                first[article] = min(first.get(article, 1e18), event_time(event))
        return first

    def settle_times(self) -> dict[str, float]:
        """Last store or dead-letter line per article (wall time)."""
        last: dict[str, float] = {}
        for event in self.events():
            if event.get("event") in ("article enriched", "dead-lettered"):
                article = event.get("article_id") or "?"
                last[article] = max(last.get(article, 0.0), event_time(event))
        return last

    def ledger(self, ids: list[str], *, recovery_s: float | None, notes: str = "",
               stored_twice: int | None = None, published: int | None = None,
               expect_writes: int | None = 1, expect_dead: int = 0) -> Ledger:
        dead = self.dead_ids()
        stored_ids = [i for i in ids if self.store.get(i) is not None]
        writes = [self.store.writes(i) for i in stored_ids]
        dead_ids = [i for i in ids if i in dead]
        lost = [i for i in ids if i not in dead and i not in stored_ids]
        if stored_twice is None:
            seen: dict[str, int] = {}
            for doc in self.store.iter_documents():
                if doc["id"] in ids:
                    seen[doc["id"]] = seen.get(doc["id"], 0) + 1
            stored_twice = sum(1 for count in seen.values() if count > 1)
        executions = (f"{min(writes)}/{statistics.median(writes):g}/{max(writes)}"
                      if writes else "-")
        problems = []
        if lost:
            problems.append(f"lost: {lost[:5]}")
        if stored_twice:
            problems.append(f"stored twice: {stored_twice}")
        if len(dead_ids) != expect_dead:
            problems.append(f"dead-lettered {len(dead_ids)}, expected {expect_dead}: "
                            f"{[(i, dead[i][0]['reason']) for i in dead_ids][:5]}")
        if expect_writes is not None and any(w != expect_writes for w in writes):
            problems.append(f"executions other than {expect_writes}: {executions}")
        return Ledger(
            fault=self.fault, published=published if published is not None else len(ids),
            stored=len(stored_ids), dead_lettered=len(dead_ids), lost=len(lost),
            stored_twice=stored_twice, executions=executions,
            recovery_s=None if recovery_s is None else round(recovery_s, 1),
            peak_rss_mb=round(self.peak_rss, 1) if self.peak_rss else None,
            notes=notes, ok=not problems, problems=problems)

    def close(self) -> None:
        for worker in self.workers:
            stop_worker(worker)
        self._sampling.set()
        if self._store is not None:
            self._store.close()
        keys = list(self.redis.scan_iter(match=f"{self.settings.key_prefix}*", count=10_000))
        keys += [self.settings.queue, self.settings.dead_letter_key]
        self.redis.delete(*keys)
        self.redis.close()


def _worst_recovery(run: Run) -> float | None:
    faults, settled = run.fault_times(), run.settle_times()
    gaps = [settled[a] - t for a, t in faults.items() if a in settled]
    return max(gaps) if gaps else None


# --- the faults -----------------------------------------------------------------------------
def sigkill_child(run: Run, n: int, timeout: float) -> Ledger:
    """SIGKILL of the pool process in the middle of every article's entities task (once
    each): requeued at once, run again, stored once. Recovery: worst kill -> stored."""
    run.worker(env={"ENRICH_TEST_KILL_ON": "*", "ENRICH_TEST_KILL_STAGE": "entities",
                    "ENRICH_TEST_KILL_TIMES": "1"})
    ids = run.publish(run.articles(n))
    run.settle(ids, timeout)
    return run.ledger(ids, recovery_s=_worst_recovery(run),
                      notes=f"{len(run.fault_times())} pool processes killed")


def crash_after_commit(run: Run, n: int, timeout: float) -> Ledger:
    """The pool process dies after the store committed, before the ack: the store task runs
    again (writes = 2), one row per article. Recovery: worst crash -> second store."""
    run.worker(env={"ENRICH_TEST_KILL_ON": "*", "ENRICH_TEST_KILL_STAGE": "store",
                    "ENRICH_TEST_KILL_WHEN": "after", "ENRICH_TEST_KILL_TIMES": "1"})
    ids = run.publish(run.articles(n))
    run.settle(ids, timeout)
    # settled as soon as the first write is there: wait for the re-run too
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(run.store.writes(i) < 2 for i in ids):
        time.sleep(0.25)
    return run.ledger(ids, recovery_s=_worst_recovery(run), expect_writes=2,
                      notes="store re-run after each crash")


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
    run.worker()
    articles = run.articles(n)
    started = time.time()
    first, second = _concurrently(lambda: run.publish(articles), lambda: run.publish(articles))
    ids = first
    run.settle(ids, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(run.store.writes(i) < 2 for i in ids):
        time.sleep(0.25)
    self_duplicates = sum(1 for i in ids if (run.store.get(i) or {}).get("dedupe", {}).get(
        "duplicate_of") == i)
    settled = max(run.settle_times().values(), default=started)
    ledger = run.ledger(ids, recovery_s=settled - started, expect_writes=2,
                        published=len(first) + len(second),
                        notes=f"{len(ids)} ids x2; duplicate of itself: {self_duplicates}")
    if self_duplicates:
        ledger.ok = False
        ledger.problems.append(f"{self_duplicates} marked duplicate of themselves")
    return ledger


def near_duplicates(run: Run, n: int, timeout: float) -> Ledger:
    """N pairs of near-duplicates, the two of a pair published at the same instant: each
    pair decided one canonical + one duplicate of it ("stored twice" = pairs decided
    otherwise). Recovery: publish -> all settled."""
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
    undecided = 0
    for a, b in pairs:
        da, db = run.store.get(a["id"]), run.store.get(b["id"])
        if not (da and db):
            continue
        of_a, of_b = da["dedupe"]["duplicate_of"], db["dedupe"]["duplicate_of"]
        if not ((of_a is None and of_b == a["id"]) or (of_b is None and of_a == b["id"])):
            undecided += 1
    settled = max(run.settle_times().values(), default=started)
    return run.ledger(ids, recovery_s=settled - started, stored_twice=undecided,
                      notes=f"{n} pairs at the same instant")


def poison(run: Run, n: int, timeout: float) -> Ledger:
    """One article kills its pool process on every delivery: dead-lettered as
    too_many_deliveries after ENRICH_MAX_DELIVERIES, the rest stored. Recovery: first kill
    -> dead letter."""
    ids = [f"{run.prefix}-{i}" for i in range(n)]
    run.worker(env={"ENRICH_TEST_KILL_ON": ids[0]})
    run.publish(run.articles(n))
    run.settle(ids, timeout)
    dead = run.dead_ids().get(ids[0], [{}])
    return run.ledger(ids, recovery_s=_worst_recovery(run), expect_dead=1,
                      notes=f"poison: {dead[0].get('reason')} after "
                            f"{dead[0].get('deliveries')} deliveries")


def worker_lost(run: Run, n: int, timeout: float) -> Ledger:
    """A whole worker (main process and pool) is SIGKILLed after a store commit, before the
    ack; a second worker sweeps its unacknowledged messages back after the visibility
    timeout. Recovery: kill -> that article stored again."""
    ids = [f"{run.prefix}-{i}" for i in range(n)]
    # The last article: by then the pool is warm (a cold model load can outlive a short
    # visibility timeout and make Redis hand a task out twice).
    doomed = run.worker(env={"ENRICH_TEST_KILL_ON": ids[-1], "ENRICH_TEST_KILL_STAGE": "store",
                             "ENRICH_TEST_KILL_WHEN": "after", "ENRICH_TEST_KILL_HOW": "worker",
                             "ENRICH_TEST_KILL_TIMES": "1"})
    run.publish(run.articles(n))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and doomed.poll() is None:
        time.sleep(0.1)
    run.worker()  # the survivor: its sweep brings back what the dead worker held
    run.settle(ids, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.store.writes(ids[-1]) < 2:
        time.sleep(0.25)
    ledger = run.ledger(ids, recovery_s=_worst_recovery(run), expect_writes=None,
                        notes=f"visibility timeout {run.settings.visibility_timeout} s, "
                              f"sweep every {run.settings.unacked_restore_throttle} s")
    if run.store.writes(ids[-1]) != 2:
        ledger.ok = False
        ledger.problems.append("the killed worker's store task was not run again")
    return ledger


def store_unavailable(run: Run, n: int, timeout: float, outage_s: float = 6.0) -> Ledger:
    """PostgreSQL unreachable for a few seconds mid-run (a proxy in front of it is cut; the
    server itself is never stopped): store tasks retry with backoff, all stored once.
    Recovery: store reachable again -> all settled."""
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
            ledger.ok = False
            ledger.problems.append("no store task met the outage")
        return ledger
    finally:
        proxy.close()


FAULTS: dict[str, Callable[..., Ledger]] = {
    "sigkill_child": sigkill_child,
    "crash_after_commit": crash_after_commit,
    "publish_twice": publish_twice,
    "near_duplicates": near_duplicates,
    "poison": poison,
    "worker_lost": worker_lost,
    "store_unavailable": store_unavailable,
}
QUICK = ("sigkill_child", "crash_after_commit", "publish_twice", "near_duplicates")


def run_fault(name: str, base: Settings, *, articles: int = 12, timeout: float = 180,
              store_url: str | None = None, workdir: Path | None = None,
              visibility_timeout: int = 10) -> Ledger:
    """Run one fault in a world of its own and return its ledger (workers stopped, keys
    removed; a temporary SQLite store unless store_url is given)."""
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="enrich-faults-")) if own_dir else workdir
    overrides: dict[str, Any] = {}
    if name == "worker_lost":
        overrides = {"visibility_timeout": visibility_timeout, "unacked_restore_throttle": 1}
    run = Run(name, base, root, store_url=store_url, **overrides)
    try:
        return FAULTS[name](run, articles, timeout)
    finally:
        run.close()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
