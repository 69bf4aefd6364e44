"""What an operator relies on, with real worker processes: metrics under prefork, liveness
from the heartbeat, readiness, warm shutdown on SIGTERM, and horizontal scaling."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.request

import pytest
import redis

from tests.workers import enrich, start_worker, stop_worker, wait_until
from worker.health import liveness, readiness, write_heartbeat
from worker.producer import publish
from worker.store import open_store

WORDS = ("council harbour minister budget river storm election school railway museum "
         "hospital market farmers bridge festival court police energy prices workers").split()


def article(i: int, prefix: str = "ops") -> dict:
    """A distinct short English article (own generated text)."""
    import random

    rng = random.Random(i)
    body = " ".join(" ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "."
                    for _ in range(6))
    return {"id": f"{prefix}-{i}", "text": f"Report {i} from the city desk in Leeds. {body}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def sample(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


# --- unit: the health decisions ----------------------------------------------------------
def test_liveness_fails_on_missing_stale_or_stalled_heartbeat(tmp_path, settings_for):
    """No file, an old file, or active tasks with no progress each fail liveness."""
    settings = settings_for(heartbeat_file=str(tmp_path / "hb"), heartbeat_max_age=60,
                            stall_seconds=600)
    assert liveness(settings)[0] is False
    now = 1_000_000.0
    write_heartbeat(settings.heartbeat_file,
                    {"at": now - 5, "active": 0, "processed": 9, "progress_at": now - 5})
    assert liveness(settings, now=now) == (True, "heartbeat 5s old, 0 active, 9 done")
    assert liveness(settings, now=now + 120)[0] is False
    write_heartbeat(settings.heartbeat_file,
                    {"at": now, "active": 2, "processed": 9, "progress_at": now - 700})
    alive, why = liveness(settings, now=now)
    assert not alive and "2 task(s) active and none finished for 700s" in why


def test_readiness_fails_when_the_broker_does_not_answer(tmp_path, settings_for):
    """A fresh heartbeat is not enough: the broker must answer too."""
    settings = settings_for(heartbeat_file=str(tmp_path / "hb"),
                            broker_url="redis://:secret@127.0.0.1:1/0")
    write_heartbeat(settings.heartbeat_file,
                    {"at": time.time(), "active": 0, "processed": 0, "progress_at": time.time()})
    ready, why = readiness(settings)
    assert not ready and "not answering" in why and "secret" not in why


# --- real worker processes ---------------------------------------------------------------
@pytest.mark.slow
def test_metrics_count_enriched_duplicates_and_stage_times_across_pool_children(
    tmp_path, settings_for
):
    """/metrics aggregates both prefork children and reads the queue depth from Redis."""
    port = free_port()
    settings = settings_for(metrics_port=port, metrics_address="127.0.0.1",
                            heartbeat_file=str(tmp_path / "hb"))
    env_dir = tmp_path / "prom"
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(env_dir)  # inherited by the worker
    try:
        worker = start_worker(settings, tmp_path / "worker.log", concurrency=2)
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    store = open_store(settings.store_url)
    try:
        records = [article(i) for i in range(6)]
        records.append({**records[0], "id": "ops-copy"})  # exact copy: one duplicate
        publish(records, settings=settings)
        from worker.app import create_app

        create_app(settings).send_task("enrich.article", args=[{"id": "no-body"}],
                                       queue=settings.queue)  # another producer's bad record
        redis.Redis.from_url(settings.broker_url).lpush(settings.queue, b"garbage")
        wait_until(lambda: store.count() == 7, 120, what="7 documents stored")
        text = wait_until(lambda: (t := scrape(port)) and
                          sample(t, "enrich_articles_enriched_total") == 7 and t, 30,
                          what="the enriched counter at 7")
        assert sample(text, "enrich_duplicates_total") == 1
        text = wait_until(lambda: (t := scrape(port)) and sample(
            t, "enrich_dead_letters_total", '{reason="malformed_message"}') == 1 and t, 30,
            what="the malformed message counted (main process)")
        assert sample(text, "enrich_dead_letters_total", '{reason="invalid_article"}') == 1
        assert sample(text, "enrich_articles_rejected_total", '{reason="invalid_article"}') == 1
        assert sample(text, "enrich_dead_letter_list_length") == 2
        for stage in ("clean", "language", "entities", "dedupe", "store"):
            # completed stages only: the bad record failed at clean, the garbage never ran
            assert sample(text, "enrich_stage_duration_seconds_count",
                          f'{{stage="{stage}"}}') == 7
        # The last ack can follow the last store by a moment: the depth drains to 0.
        wait_until(lambda: sample(scrape(port), "enrich_queue_depth") == 0, 30,
                   what="the queue depth back at 0")
        assert "enrich_queue_depth" in text and "enrich_dead_letter_list_length" in text
        assert len(list(env_dir.glob("*.db"))) >= 2, "each pool child writes its own samples"
    finally:
        stop_worker(worker)


@pytest.mark.slow
def test_liveness_fails_while_the_worker_is_frozen_and_recovers(tmp_path, settings_for):
    """A SIGSTOPped worker is alive as a process but not consuming: liveness says so."""
    settings = settings_for(heartbeat_file=str(tmp_path / "hb"), heartbeat_interval=0.5,
                            heartbeat_max_age=3, metrics_port=0)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        wait_until(lambda: enrich("health", "live", settings=settings).returncode == 0, 60,
                   what="liveness ok")
        assert enrich("health", "ready", settings=settings).returncode == 0
        os.kill(worker.pid, signal.SIGSTOP)
        time.sleep(4.5)
        frozen = enrich("health", "live", settings=settings)
        assert frozen.returncode == 1 and b"old" in frozen.stdout
        os.kill(worker.pid, signal.SIGCONT)
        wait_until(lambda: enrich("health", "live", settings=settings).returncode == 0, 20,
                   what="liveness ok again")
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        stop_worker(worker)
    assert not (tmp_path / "hb").exists(), "a clean shutdown removes the heartbeat"


@pytest.mark.slow
def test_sigterm_mid_flood_finishes_or_redelivers_and_nothing_is_lost(tmp_path, settings_for):
    """Warm shutdown: exit 0, and after a restart every article is stored exactly once."""
    settings = settings_for(metrics_port=0, heartbeat_file=str(tmp_path / "hb"),
                            visibility_timeout=20)
    store = open_store(settings.store_url)
    worker = start_worker(settings, tmp_path / "worker1.log", concurrency=2)
    try:
        publish([article(i, "term") for i in range(300)], settings=settings)
        wait_until(lambda: store.count() >= 5, 120, interval=0.05,
                   what="a few stored before SIGTERM")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        stopped_at = store.count()
        assert stopped_at < 300, "the flood should still be running at SIGTERM"
    finally:
        stop_worker(worker)
    worker = start_worker(settings, tmp_path / "worker2.log", concurrency=2)
    try:
        wait_until(lambda: store.count() == 300, 240, what="all 300 stored after restart")
        assert all(store.get(f"term-{i}") for i in range(300))
    finally:
        stop_worker(worker)


@pytest.mark.slow
def test_three_workers_share_one_queue_and_store_every_article_once(
    tmp_path, settings_for, pg_url
):
    """Three worker processes with distinct hostnames: all stored once, each did a share."""
    from tests.conftest import EVAL

    corpus = EVAL / "corpus" / "news.jsonl"
    count = 2000
    if corpus.exists():
        with corpus.open(encoding="utf-8") as f:
            rows = [json.loads(line) for _, line in zip(range(count), f)]
        records = [{"id": f"scale-{r['id']}", "title": r.get("title"), "text": r["text"],
                    "source": r.get("source"), "language": r.get("lang")} for r in rows]
    else:
        records = [article(i, "scale") for i in range(count)]  # ../shared absent
    settings = settings_for(store_url=pg_url, metrics_port=0)
    workers = [
        start_worker(settings.model_copy(update={"heartbeat_file": str(tmp_path / f"hb{n}")}),
                     tmp_path / f"worker{n}.log", hostname=f"scale{n}@%h")
        for n in range(3)
    ]
    store = open_store(pg_url)
    try:
        started = time.monotonic()
        report = publish(records, settings=settings)
        assert not report.rejected
        wait_until(lambda: store.count() == len(records), 600, interval=1,
                   what=f"{len(records)} documents stored")
        elapsed = time.monotonic() - started
        shares = [(tmp_path / f"worker{n}.log").read_text().count('"article enriched"')
                  for n in range(3)]
        print(f"\nscaling: {len(records)} articles by 3 workers in {elapsed:.1f}s "
              f"({len(records) / elapsed:.1f}/s), shares {shares}")
        assert all(share > 0 for share in shares), shares
        assert sum(shares) >= len(records)
        assert all(store.writes(r["id"]) >= 1 for r in records[:: max(1, len(records) // 50)])
        assert all(w.poll() is None for w in workers)
    finally:
        for w in workers:
            stop_worker(w)


def test_health_probe_does_not_import_metrics():
    """Probes run `enrich health` often: it must not create metric files or load models."""
    import subprocess
    import sys

    code = ("import sys, worker.cli, worker.health; "
            "bad = {'prometheus_client', 'spacy', 'trafilatura'} & set(sys.modules); "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_metrics_directory_the_process_made_goes_when_it_exits_not_when_a_child_does():
    """Without PROMETHEUS_MULTIPROC_DIR, worker.ops makes a temporary one: a forked child
    leaving keeps it (the parent still writes there), the process that made it removes it."""
    import subprocess
    import sys

    script = (
        "import os, sys, worker.ops\n"
        "path = os.environ['PROMETHEUS_MULTIPROC_DIR']\n"
        "print(path, flush=True)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    sys.exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(os.path.isdir(path), flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    path, after_child = out[0], out[1]
    assert os.path.basename(path).startswith("enrich-metrics-")
    assert after_child == "True"
    assert not os.path.exists(path)
