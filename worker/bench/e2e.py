"""End to end: publish to Redis, real `enrich worker` processes, until PostgreSQL holds every
article.

One `enrich worker --concurrency N` (prefork) on a private redis-server, storing into a
PostgreSQL schema made for the run (dropped afterwards). The same worker serves every
phase, so its pool children's memory is measured after all the articles it has handled:

- warm-up: a few articles, so each pool child has loaded its models;
- throughput: the consumer is cancelled (``celery control cancel_consumer``), the articles
  are published as a backlog, the consumer is added back and the clock runs from there to
  the last ``stored_at``. Publishing is timed on its own, and model loading is in neither;
- accounting: a small batch under Redis MONITOR, to tell the commands clients send from
  those the dedupe script runs inside the server (not timed);
- latency: articles published at a fixed pace (a fraction of the measured throughput),
  each one's publish time against its ``stored_at`` and ``processed_at``;
- memory: more articles (the corpus reused with new ids, a bounded backlog) up to each
  checkpoint; there the queue is drained and VmRSS/VmHWM of the pool children read.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from worker.bench import proc
from worker.bench.corpus import Corpus
from worker.bench.redisstats import Monitor, PrivateRedis, delta
from worker.bench.taskwatch import TaskWatch
from worker.settings import get_settings

STAGE_TASKS = ("enrich.clean", "enrich.language", "enrich.entities", "enrich.dedupe",
               "enrich.store")  # what Flower must list for every article (stage events)


class BenchError(RuntimeError):
    pass


def schema_url(base: str, schema: str) -> str:
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options={quote(f'-csearch_path={schema}')}"


def log_warnings(path: Path) -> dict[str, int]:
    """Warnings and errors in a worker's JSON log, counted by level and event: a worker that
    had to work around something (a gazetteer built in process, say) is not the usual one."""
    counts: dict[str, int] = {}
    if not path.is_file():
        return counts
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
                event = f"{entry['level']}: {str(entry.get('event'))[:120]}"
                counts[event] = counts.get(event, 0) + 1
    return counts


class EndToEnd:
    def __init__(self, corpus: Corpus, redis: PrivateRedis, postgres_url: str, *,
                 concurrency: int, workdir: Path, say: Callable[[str], None],
                 worker_args: list[str] = ()) -> None:
        self.corpus = corpus
        self.redis = redis
        self.postgres_url = postgres_url
        self.concurrency = concurrency
        self.worker_args = list(worker_args)  # extra `enrich worker` arguments (experiments)
        self.workdir = workdir
        self.say = say
        run_id = uuid.uuid4().hex[:10]
        self.schema = f"bench_{run_id}"
        self.nodename = f"bench-{run_id}@{socket.gethostname()}"
        self.settings = get_settings().model_copy(update={
            "broker_url": redis.url(0), "redis_url": redis.url(0),
            "store_url": schema_url(postgres_url, self.schema),
            "queue": f"bench-{run_id}", "key_prefix": f"bench:{run_id}:", "log_format": "json",
        })
        self.worker: subprocess.Popen | None = None
        self.published = 0  # articles published to this worker so far (all phases)
        self._schema_made = False
        self._conn = None
        self.pg_backends: list[int] = []
        self._dead, self._dead_checked = 0, 0.0

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        import psycopg

        from worker.app import create_app

        with psycopg.connect(self.postgres_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        self._schema_made = True
        from worker.store import open_store

        open_store(self.settings.store_url).close()  # the documents table, before any worker
        self._conn = psycopg.connect(self.settings.store_url, autocommit=True)
        self.app = create_app(self.settings)  # publishing and control, as the project does
        env = dict(os.environ)
        for name in ("broker_url", "redis_url", "store_url", "queue", "key_prefix", "log_format"):
            env[f"ENRICH_{name.upper()}"] = str(getattr(self.settings, name))
        log = (self.workdir / "worker.log").open("ab")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker", "--concurrency", str(self.concurrency),
             "--hostname", self.nodename, *self.worker_args],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 120
        while not self.app.control.ping(destination=[self.nodename], timeout=1):
            self._check_worker()
            if time.monotonic() > deadline:
                raise BenchError(f"the worker did not answer within 120 s "
                                 f"(log: {self.workdir / 'worker.log'})")
        deadline = time.monotonic() + 30  # prefork children; none with -P solo/threads
        while len(proc.children(self.worker.pid)) < self.concurrency \
                and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait()
        if self._conn is not None:
            self._conn.close()
        if self._schema_made:
            import psycopg

            with psycopg.connect(self.postgres_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            self._schema_made = False

    def _check_worker(self) -> None:
        if self.worker is None or self.worker.poll() is not None:
            raise BenchError(f"the worker exited (log: {self.workdir / 'worker.log'})")

    def pool(self) -> list[int]:
        """The processes that run tasks: the prefork children, or the worker itself when it
        has none (``--worker-args '-P solo'``)."""
        if self.worker is None:
            return []
        return proc.children(self.worker.pid) or [self.worker.pid]

    def groups(self) -> dict[str, list[int]]:
        pool = self.pool()
        main = [] if pool == [self.worker.pid] else [self.worker.pid]
        return {"worker_pool": pool, "worker_main": main,
                "redis": [self.redis.pid], "postgres": self.pg_backends}

    def find_pg_backends(self) -> None:
        """The PostgreSQL backends serving the worker and this process (their CPU is ours,
        not other people's load)."""
        from urllib.parse import urlsplit

        port = urlsplit(self.postgres_url).port or 5432
        local = proc.local_ports_to([*self.pool(), self.worker.pid, os.getpid()], port)
        rows = self._conn.execute("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)",
                                  (sorted(local),)).fetchall()
        self.pg_backends = [r[0] for r in rows]

    def reset_dedupe_index(self) -> None:
        """Forget the dedupe index (this run's private Redis), so that articles published
        again under new ids meet it as new stories, as the first ones did."""
        keys = list(self.redis.client.scan_iter(match=f"{self.settings.key_prefix}dd:*",
                                                count=1000))
        for start in range(0, len(keys), 1000):
            self.redis.client.delete(*keys[start:start + 1000])

    # --- primitives ------------------------------------------------------------------------
    def _control(self, command: str) -> None:
        method = getattr(self.app.control, command)
        replies = method(self.settings.queue, destination=[self.nodename], reply=True, timeout=5)
        if not replies:
            raise BenchError(f"the worker did not answer {command}")

    def publish(self, articles: list[dict[str, Any]], pace: float | None = None,
                batch_size: int | None = None) -> dict[str, float]:
        """Publish with the project's producer; returns {id: wall time just before publish}.
        With ``pace`` (articles/s) the i-th article goes out at start + i/pace; ``batch_size``
        overrides ENRICH_PUBLISH_BATCH_SIZE."""
        from worker.producer import publish

        sent: dict[str, float] = {}

        def records():
            start = time.monotonic()
            for number, article in enumerate(articles):
                if pace:
                    wait = start + number / pace - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                sent[article["id"]] = time.time()
                yield article

        report = publish(records(), settings=self.settings, celery_app=self.app,
                         batch_size=batch_size)
        if report.rejected:
            raise BenchError(f"{len(report.rejected)} articles rejected at publish: "
                             f"{report.rejected[0]}")
        self.published += len(report.published)
        return sent

    def done(self) -> int:
        """Articles stored or dead-lettered so far. The dead letters are looked up at most
        once a second: this polling is Redis traffic the per-article figures count too."""
        stored = self._conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        if time.monotonic() - self._dead_checked >= 1.0:
            self._dead = self.dead_letters()
            self._dead_checked = time.monotonic()
        return stored + self._dead

    def dead_letters(self) -> int:
        return int(self.redis.client.llen(self.settings.dead_letter_key))

    def wait_done(self, target: int, stall_timeout: float = 300, interval: float = 1.0) -> None:
        """Until ``target`` articles are stored or dead-lettered; fails when nothing moves for
        ``stall_timeout`` seconds or the worker exits. Once a second: each count is a scan of
        the documents table in the PostgreSQL the worker writes to (2-3 ms at 8,000-10,000
        rows), and at 5 a second it took about 0.3 % of the two cores from the worker during
        the throughput rounds (growing with the table). The phases' clocks stop at the last
        ``stored_at``, not at this poll."""
        last, moved = -1, time.monotonic()
        while (count := self.done()) < target:
            self._check_worker()
            if count != last:
                last, moved = count, time.monotonic()
            elif time.monotonic() - moved > stall_timeout:
                raise BenchError(f"no progress for {stall_timeout:.0f} s at {count}/{target} "
                                 f"(log: {self.workdir / 'worker.log'})")
            time.sleep(interval)

    def stored(self, ids: list[str]) -> dict[str, tuple[float, float, dict[str, float]]]:
        """{id: (stored_at epoch, processed_at epoch, timings_ms)} from the store."""
        rows = self._conn.execute(
            "SELECT id, extract(epoch FROM stored_at)::float8, doc->>'processed_at', "
            "doc->'pipeline'->'timings_ms' FROM documents WHERE id = ANY(%s)", (ids,)).fetchall()
        return {r[0]: (r[1], datetime.fromisoformat(r[2]).timestamp(), r[3]) for r in rows}

    def memory(self) -> dict[str, Any]:
        pool = self.pool()
        return {
            "pool_pids": pool,
            "rss_mb": [round((proc.status_kb(p) or 0) / 1024, 1) for p in pool],
            "hwm_mb": [round((proc.status_kb(p, "VmHWM") or 0) / 1024, 1) for p in pool],
            "pss_mb": [round((proc.pss_kb(p) or 0) / 1024, 1) for p in pool],
            "main_rss_mb": round((proc.status_kb(self.worker.pid) or 0) / 1024, 1),
        }

    # --- phases ----------------------------------------------------------------------------
    def warm_up(self, articles: list[dict[str, Any]], rounds: int = 3) -> None:
        """Until every pool child has loaded its models. Which child runs which task is not
        ours to choose, so: another round while one child's RSS is under 80 % of the
        largest (a child without spaCy is ~90 MB smaller). One article per message: a
        whole warm-up set fits in one batch, which only one child would run."""
        for number in range(rounds):
            self.publish([{**a, "id": f"{a['id']}.w{number}"} for a in articles], batch_size=1)
            self.wait_done(self.published)
            rss = self.memory()["rss_mb"]
            if rss and min(rss) >= 0.8 * max(rss):
                break
        self.find_pg_backends()

    def idle(self, seconds: float) -> dict[str, Any]:
        """Redis traffic of the idle worker (heartbeats, polling): subtracted as background."""
        before = self.redis.snapshot()
        time.sleep(seconds)
        return delta(before, self.redis.snapshot())

    def throughput(self, articles: list[dict[str, Any]]) -> dict[str, Any]:
        self._control("cancel_consumer")
        before = self.redis.snapshot()
        with proc.Phase(self.groups) as publishing:
            self.publish(articles)
        with proc.Phase(self.groups) as processing:
            started = time.time()
            self._control("add_consumer")
            self.wait_done(self.published)
        traffic = delta(before, self.redis.snapshot())
        stored = self.stored([a["id"] for a in articles])
        if not stored:
            raise BenchError("no article of the throughput phase was stored")
        seconds = max(s[0] for s in stored.values()) - started
        n = len(articles)
        return {
            "articles": n,
            "stored": len(stored),
            "seconds": round(seconds, 3),
            "articles_per_s": round(n / seconds, 3),
            "publish": {"seconds": publishing.figures["seconds"],
                        "articles_per_s": round(n / publishing.seconds, 1),
                        "cpu_ms_per_article": round(publishing.cpu["bench"] * 1000 / n, 3)},
            "cpu_ms_per_article": {name: round(cpu * 1000 / n, 3)
                                   for name, cpu in processing.cpu.items()},
            "minor_faults_per_article": {name: round(faults / n, 1)
                                         for name, faults in processing.minor_faults.items()},
            "phase": processing.figures,
            "redis": traffic,
            "timings": {a["id"]: stored[a["id"]][2] for a in articles if a["id"] in stored},
        }

    def accounting(self, articles: list[dict[str, Any]]) -> tuple[dict[str, Any], dict]:
        """Commands by origin (sent by clients / run inside Lua scripts) and name, per
        article, from MONITOR on a small batch published live (not timed); and the tasks
        per name an event watcher (what Flower runs) saw succeed for that batch. Watching is
        kept out of the timed runs: decoding six events per article costs the watcher about
        1 ms of CPU per article on the same cores."""
        with TaskWatch(self.app) as watch, Monitor(self.redis) as monitor:
            self.publish(articles)
            self.wait_done(self.published)
            deadline = time.monotonic() + 10  # events trail the stores by milliseconds
            while time.monotonic() < deadline and min(
                    (watch.succeeded().get(t, 0) for t in STAGE_TASKS), default=0) < len(articles):
                time.sleep(0.1)
            return monitor.per_article(len(articles)), watch.succeeded()

    def latency(self, articles: list[dict[str, Any]], rate: float) -> dict[str, Any]:
        with proc.Phase(self.groups) as phase:
            sent = self.publish(articles, pace=rate)
            self.wait_done(self.published)
        stored = self.stored(list(sent))
        return {
            "articles": len(articles),
            "stored": len(stored),
            "rate_per_s": round(rate, 3),
            "stored_at_ms": [(s[0] - sent[i]) * 1000 for i, s in stored.items()],
            # Long after the last publish means a queue built up: the pace was not below
            # capacity during the phase (others' load takes capacity away).
            "drain_after_last_publish_s": round(max(s[0] for s in stored.values())
                                                - max(sent.values()), 3) if stored else None,
            "processed_at_ms": [(s[1] - sent[i]) * 1000 for i, s in stored.items()],
            "phase": phase.figures,
        }

    def grow_to(self, target: int, next_index: int, backlog: int = 64, tag: str = "") -> int:
        """Publish corpus articles from ``next_index`` until ``target`` in all were published,
        at most ``backlog`` outstanding; wait until they are done. Returns the next index."""
        while self.published < target:
            room = backlog - (self.published - self.done())
            if room <= 0:
                self._check_worker()
                time.sleep(0.2)
                continue
            count = min(room, target - self.published)
            self.publish(self.corpus.articles(next_index, count, tag))
            next_index += count
        self.wait_done(self.published)
        return next_index
