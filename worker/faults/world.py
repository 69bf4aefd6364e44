"""One fault's world and its ledger: own queue, key prefix, store, workers and logs.

A `Run` starts real `enrich worker` processes (worker/faults/harness.py) on a queue and key
prefix of its own, samples their memory while the fault plays out, reads their JSON logs
(faults fired, messages received, pool processes lost) to time redeliveries, and counts
every article at the end (`Run.ledger`). Articles are counted from the store's table in one query per poll, so
20,000 of them cost no more to watch than 12.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import re
import signal
import sqlite3
import statistics
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import redis

from worker.bench import proc
from worker.deadletter import DeadLetters
from worker.faults.harness import event_time, kill_group, log_events, start_worker, stop_worker
from worker.settings import Settings
from worker.transport import PENDING_REGISTRY_SUFFIX

WORDS = ("council harbour minister budget river storm election school railway museum hospital "
         "market farmers bridge festival court police energy prices workers village coast "
         "teachers nurses drivers library ferry airport factory union mayor parliament "
         "village weather flood harvest tourism fishing housing rents students exams bus "
         "cyclists museum theatre orchestra football league stadium charity volunteers "
         "scientists telescope glacier forest wildfire drought reservoir pipeline turbine").split()

UNACKED_KEY = "unacked"  # kombu's Redis transport: delivered, not yet acknowledged
PENDING_REGISTRY_KEY = f"{UNACKED_KEY}{PENDING_REGISTRY_SUFFIX}"  # pending list -> its queue
_RECEIVED = re.compile(r"^Task (\S+)\[([^\]]+)\] received$")


def article_text(seed: int, sentences: int = 10) -> str:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(14)).capitalize() + "."
             for _ in range(sentences)]
    return f"Report {seed} from the regional desk. " + " ".join(lines)


def short_text(seed: int) -> str:
    """One sentence: the flood tests the queue, not the NLP."""
    rng = random.Random(seed)
    return f"Note {seed}: " + " ".join(rng.choice(WORDS) for _ in range(10)) + "."


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
    redelivery_s: float | None = None
    wall_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)


COLUMNS = ("fault", "published", "stored", "dead-lettered", "lost", "stored twice",
           "executions/article", "redelivery s", "recovery s", "peak RSS MB", "wall s", "notes")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(ledgers: list[Ledger]) -> str:
    rows = [COLUMNS] + [(
        lg.fault, str(lg.published), str(lg.stored), str(lg.dead_lettered), str(lg.lost),
        str(lg.stored_twice), lg.executions, _seconds(lg.redelivery_s), _seconds(lg.recovery_s),
        "-" if lg.peak_rss_mb is None else f"{lg.peak_rss_mb:.0f}", _seconds(lg.wall_s),
        lg.notes) for lg in ledgers]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class Rows:
    """id -> (writes, duplicate_of) of this run's documents, in one query on the store's
    table (the store API reads one id per round trip; a 20,000-article ledger would poll
    for minutes)."""

    def __init__(self, url: str) -> None:
        self.url = url
        if _is_postgres(url):
            import psycopg

            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
            self._sql = "SELECT id, writes, duplicate_of FROM documents WHERE id LIKE %s"
        else:
            path = url.removeprefix("sqlite://").removeprefix("/")
            self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
            self._sql = "SELECT id, writes, duplicate_of FROM documents WHERE id LIKE ?"
        self.twice = 0

    def of(self, prefix: str) -> dict[str, tuple[int, str | None]]:
        found = self._conn.execute(self._sql, (f"{prefix}%",)).fetchall()
        rows: dict[str, tuple[int, str | None]] = {}
        self.twice = 0
        for doc_id, writes, duplicate_of in found:
            self.twice += doc_id in rows  # cannot happen while id is the primary key
            rows[doc_id] = (writes, duplicate_of)
        return rows

    def close(self) -> None:
        self._conn.close()


class Run:
    """One fault's world: own queue, key prefix, store, workers and logs."""

    def __init__(self, fault: str, base: Settings, workdir: Path, *,
                 store_url: str | None = None, **overrides: Any) -> None:
        self.fault = fault
        uid = uuid.uuid4().hex[:10]
        self.prefix = f"faults-{uid}"
        self.workdir = workdir / fault
        self.workdir.mkdir(parents=True, exist_ok=True)
        store_url = store_url or f"sqlite:///{self.workdir / 'store.db'}"
        self._schema = None
        if _is_postgres(store_url) and "options" not in dict(parse_qsl(urlsplit(store_url).query)):
            # A schema of its own, dropped at close: the shared database keeps nothing.
            self._schema = f"faults_{uid}"
            store_url = _with_schema(store_url, self._schema)
        self.settings = base.model_copy(update={
            "queue": f"faults-{uid}", "key_prefix": f"faults:{uid}:",
            "store_url": store_url, "log_format": "json", **overrides})
        # A short socket timeout: the samplers must not hang on a paused or restarting Redis.
        self.redis = redis.Redis.from_url(self.settings.broker_url, socket_timeout=5,
                                          socket_connect_timeout=2)
        self.dead = DeadLetters(self.redis, self.settings.dead_letter_key)
        self.workers: list[Any] = []
        self.logs: list[Path] = []
        self.stopped: set[int] = set()  # workers the fault stopped or killed on purpose
        self.peak_rss = 0.0
        self.memory: dict[int, list[tuple[float, float]]] = {}  # worker -> (time, PSS MB)
        self._rows: Rows | None = None
        self._store = None
        self.redis_server = None  # a PrivateRedis for the broker faults
        # Articles per message. Most rows follow single messages through the delivery
        # machinery (kills, leases, sweeps: counted per message), so they publish one
        # article per message; rows that set None publish as production does, in batches
        # (ENRICH_PUBLISH_BATCH_SIZE): poison (the batch is split, the poison article alone
        # dead-lettered), publish_twice, near_duplicates and flood.
        self.batch_size: int | None = 1
        self._sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    # --- the store ----------------------------------------------------------------------
    @property
    def store(self):
        if self._store is None:
            from worker.store import open_store

            self._store = open_store(self.settings.store_url)
        return self._store

    def rows(self) -> dict[str, tuple[int, str | None]]:
        if self._rows is None:
            self.store.count()  # the schema exists before the first query
            self._rows = Rows(self.settings.store_url)
        return self._rows.of(self.prefix)

    # --- sampling -----------------------------------------------------------------------
    def _sample(self) -> None:
        while not self._sampling.wait(1.0):
            self._sample_memory()

    def unacked_now(self) -> dict[str, str | None]:
        """Task id -> article id of every message of this queue that Redis holds as
        delivered and not acknowledged (running, reserved, or waiting out a retry)."""
        held: dict[str, str | None] = {}
        for raw in self.redis.hvals(UNACKED_KEY):
            with contextlib.suppress(ValueError, KeyError, TypeError, IndexError):
                message, _exchange, routing_key = json.loads(raw)
                if routing_key == self.settings.queue:
                    held[message["headers"]["id"]] = _article_of(message)
        return held

    def _sample_memory(self) -> None:
        now = time.time()
        for index, worker in enumerate(list(self.workers)):
            pids = proc.group_pids(worker.pid)
            for pid in pids:
                self.peak_rss = max(self.peak_rss, (proc.status_kb(pid, "VmHWM") or 0) / 1024)
            pss = sum(proc.pss_kb(pid) or 0 for pid in pids) / 1024
            if pss:
                self.memory.setdefault(index, []).append((now, pss))

    # --- workers ------------------------------------------------------------------------
    def worker(self, env: dict[str, str] | None = None, concurrency: int = 2,
               settings: Settings | None = None, ready_timeout: float = 60):
        """Start a worker and wait until it consumes (its "ready." line)."""
        if not self.workers:
            # The schema exists before any worker starts, as after a deployment's migration
            # (SQLite's migration is not safe against two processes opening a new file at
            # once: "table documents already exists", seen here; PostgreSQL's takes a lock).
            self.rows()
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

    def kill_worker(self, index: int) -> float:
        """SIGKILL a worker's whole process group (main process and pool); its time."""
        self.stopped.add(index)
        killed = time.time()
        kill_group(self.workers[index])
        return killed

    # --- articles -----------------------------------------------------------------------
    def articles(self, n: int, seed: int = 0, short: bool = False) -> list[dict[str, Any]]:
        """n articles of 6 sentences (about 500 characters; `short`: one sentence)."""
        def text(i: int) -> str:
            return short_text(i) if short else article_text(i, sentences=5)

        return [{"id": f"{self.prefix}-{i}", "text": text(seed * 10_000 + i)}
                for i in range(n)]

    def publish(self, articles: list[dict[str, Any]]) -> list[str]:
        from worker.producer import publish

        report = publish(articles, settings=self.settings, batch_size=self.batch_size)
        if report.rejected:
            raise RuntimeError(f"battery articles rejected: {report.rejected[:3]}")
        return report.published

    def publish_in_background(self, articles: list[dict[str, Any]]) -> threading.Thread:
        thread = threading.Thread(target=self.publish, args=(articles,), daemon=True)
        thread.start()
        return thread

    def dead_ids(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for entry in self.dead.list():
            found.setdefault(entry.get("id") or "?", []).append(entry)
        return found

    def unsettled(self, ids: list[str]) -> list[str]:
        settled = set(self.rows()) | set(self.dead_ids())
        return [i for i in ids if i not in settled]

    def settle(self, ids: list[str], timeout: float, idle_s: float = 5.0) -> float | None:
        """Wall time at which every id was stored or dead-lettered (returns once nothing of
        this queue is in flight any more either). None: time ran out, or nothing could
        happen any more (this queue empty and nothing of it unacknowledged for `idle_s`
        seconds: what is missing by then is lost, no need to wait it out)."""
        idle_since: list[float | None] = [None]

        def done() -> bool:
            if not self.unsettled(ids):
                return True
            if not self.idle():
                idle_since[0] = None
            elif idle_since[0] is None:
                idle_since[0] = time.monotonic()
            elif time.monotonic() - idle_since[0] > idle_s:
                raise _Stalled
            return False

        try:
            settled = self.wait(done, timeout)
        except _Stalled:
            return None
        if settled is not None:
            # and nothing left in flight: a killed worker's message whose article got
            # through anyway still comes back (after a sweep) and runs again
            sweep = self.settings.visibility_timeout + self.settings.unacked_restore_throttle
            self.wait(self.idle, min(timeout, sweep + 30))
        return settled

    def popped_now(self) -> int:
        """Messages of this queue in consumers' pending lists (worker/transport.py): popped,
        not yet recorded as unacknowledged. A consumer whose connection dropped right after
        its pop leaves its message there until its lease lapses and a sweep puts it back."""
        registry = self.redis.hgetall(PENDING_REGISTRY_KEY)
        mine = [pending for pending, queue in registry.items()
                if queue.decode() == self.settings.queue]
        return sum(self.redis.llen(pending) for pending in mine)

    def idle(self) -> bool:
        try:
            return (not self.redis.llen(self.settings.queue) and not self.unacked_now()
                    and not self.popped_now())
        except redis.RedisError:
            return False

    @staticmethod
    def wait(predicate, timeout: float, interval: float = 0.25) -> float | None:
        """Wall time at which predicate() held (None: time ran out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return time.time()
            time.sleep(interval)
        return None

    # --- what the logs say --------------------------------------------------------------
    def events(self, indexes: list[int] | None = None) -> list[dict[str, Any]]:
        chosen = range(len(self.logs)) if indexes is None else indexes
        return [event for i in chosen for event in log_events(self.logs[i])]

    def faults_fired(self) -> list[tuple[str, str, float]]:
        """(article id, task id, wall time) of every injected fault."""
        return [(e.get("article_id") or "?", e.get("task_id") or "?", event_time(e))
                for e in self.events() if e.get("event") == "TEST FAULT: harming this process"]

    def fault_times(self) -> dict[str, float]:
        """First injected fault per article (wall time)."""
        first: dict[str, float] = {}
        for article, _task, at in self.faults_fired():
            first[article] = min(first.get(article, 1e18), at)
        return first

    def settle_times(self) -> dict[str, float]:
        """Last store or dead-letter line per article (wall time)."""
        last: dict[str, float] = {}
        for event in self.events():
            if event.get("event") in ("article enriched", "dead-lettered"):
                article = event.get("article_id") or "?"
                last[article] = max(last.get(article, 0.0), event_time(event))
        return last

    def stores_after(self, moment: float) -> list[float]:
        return sorted(t for e in self.events() if e.get("event") == "article enriched"
                      and (t := event_time(e)) > moment)

    def received(self, indexes: list[int] | None = None) -> dict[str, list[float]]:
        """Task id -> times a worker received its message (Celery's "received" line)."""
        found: dict[str, list[float]] = {}
        for event in self.events(indexes):
            match = _RECEIVED.match(str(event.get("event", "")))
            if match:
                found.setdefault(match.group(2), []).append(event_time(event))
        return found

    def requeued(self, fired: list[tuple[str, str, float]]) -> dict[str, float]:
        """Task id -> when its worker logged the pool process lost under it (and put the
        message back on the queue, at the back), for faults that killed a pool process:
        kills and those lines paired in time order."""
        lines = sorted(event_time(e) for e in self.events()
                       if "WorkerLostError" in str(e.get("event", "")))
        paired: dict[str, float] = {}
        for _article, task, at in sorted(fired, key=lambda fault: fault[2]):
            later = [t for t in lines if t >= at]
            if later:
                paired[task] = later[0]
                lines.remove(later[0])
        return paired

    def redelivery(self, task_id: str, killed: float, received: dict[str, list[float]],
                   requeued: dict[str, float]) -> float | None:
        """Seconds from a kill until the killed task's message was deliverable again: put
        back on the queue by its worker (a pool process lost), or received again by a
        worker (after a sweep, which puts it at the front), whichever came first. None:
        it never came back."""
        moments = [t for t in received.get(task_id, []) if t > killed]
        if task_id in requeued:
            moments.append(requeued[task_id])
        return round(min(moments) - killed, 2) if moments else None

    def task_errors(self) -> dict[str, int]:
        """Exceptions Celery logged as "raised unexpected" (outside our error policy, e.g.
        publishing the chain's next task), by their last line."""
        found: dict[str, int] = {}
        for event in self.events():
            if "raised unexpected" in str(event.get("event", "")):
                last = str(event.get("exception", "")).strip().splitlines()[-1:] or ["?"]
                found[last[0][:160]] = found.get(last[0][:160], 0) + 1
        return found

    def pool_processes_killed(self) -> int:
        return sum(log.read_text(errors="replace").count("exited with 'signal 9")
                   for log in self.logs if log.exists())

    # --- the ledger ---------------------------------------------------------------------
    def ledger(self, ids: list[str], *, recovery_s: float | None, notes: str = "",
               stored_twice: int | None = None, published: int | None = None,
               expect_writes: int | None = 1, expect_dead: int = 0,
               redelivery_s: float | None = None) -> Ledger:
        dead = self.dead_ids()
        rows = self.rows()
        writes = [rows[i][0] for i in ids if i in rows]
        dead_ids = [i for i in ids if i in dead]
        lost = [i for i in ids if i not in dead and i not in rows]
        if stored_twice is None:
            stored_twice = self._rows.twice if self._rows else 0
        executions = (f"{min(writes)}/{statistics.median(writes):g}/{max(writes)}"
                      if writes else "-")
        ledger = Ledger(
            fault=self.fault, published=published if published is not None else len(ids),
            stored=len(writes), dead_lettered=len(dead_ids), lost=len(lost),
            stored_twice=stored_twice, executions=executions,
            recovery_s=None if recovery_s is None else round(recovery_s, 1),
            peak_rss_mb=round(self.peak_rss, 1) if self.peak_rss else None,
            notes=notes, redelivery_s=redelivery_s)
        if lost:
            ledger.fail(f"lost {len(lost)}: {lost[:5]}")
            for error, count in self.task_errors().items():
                ledger.fail(f"{count} task(s) raised unexpected: {error}")
        if stored_twice:
            ledger.fail(f"stored twice: {stored_twice}")
        if len(dead_ids) != expect_dead:
            ledger.fail(f"dead-lettered {len(dead_ids)}, expected {expect_dead}: "
                        f"{[(i, dead[i][0]['reason'], dead[i][0].get('stage'), str(dead[i][0].get('error'))[:300]) for i in dead_ids][:5]}")
        if expect_writes is not None and any(w != expect_writes for w in writes):
            ledger.fail(f"executions other than {expect_writes}: {executions}")
        for index, worker in enumerate(self.workers):
            if index not in self.stopped and worker.poll() is not None:
                ledger.fail(f"worker {index} exited (code {worker.returncode}) during the fault")
        return ledger

    # --- clean-up -----------------------------------------------------------------------
    def close(self) -> None:
        for worker in self.workers:  # warm shutdowns side by side, then wait for each
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            stop_worker(worker)
        self._sampling.set()
        self._sampler.join(timeout=5)
        for closable in (self._store, self._rows):
            if closable is not None:
                closable.close()
        with contextlib.suppress(redis.RedisError):
            self._forget_unacked()
            queue = self.settings.queue
            keys = list(self.redis.scan_iter(match=f"{self.settings.key_prefix}*", count=10_000))
            keys += list(self.redis.scan_iter(match=f"{queue}*", count=10_000))
            keys += [queue, self.settings.dead_letter_key, f"_kombu.binding.{queue}"]
            self.redis.delete(*keys)
        self.redis.close()
        if self._schema:
            import psycopg

            with psycopg.connect(_without_options(self.settings.store_url),
                                 autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self._schema}" CASCADE')

    def _forget_unacked(self) -> None:
        """Messages of this queue left unacknowledged by killed workers: a later run's sweep
        would otherwise put them back on a queue nobody reads."""
        for tag, raw in self.redis.hgetall(UNACKED_KEY).items():
            with contextlib.suppress(ValueError, TypeError, IndexError):
                if json.loads(raw)[2] == self.settings.queue:
                    self.redis.hdel(UNACKED_KEY, tag)
                    self.redis.zrem(f"{UNACKED_KEY}_index", tag)


class _Stalled(Exception):
    pass


def _article_of(message: dict[str, Any]) -> str | None:
    """The article id in a task message's first argument (article or document)."""
    try:
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        first = json.loads(body)[0][0]
        return first.get("id") if isinstance(first, dict) else None
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def _with_schema(url: str, schema: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    parts = urlsplit(url)
    query = parse_qsl(parts.query) + [("options", f"-csearch_path={schema}")]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def _without_options(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    return urlunsplit(parts._replace(query=urlencode(query)))
