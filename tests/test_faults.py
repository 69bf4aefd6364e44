"""The ledger battery (`enrich faults`, worker/faults): faults injected into real workers,
then every article counted - nothing lost, nothing stored twice, workers still up.

The small variant of every fault runs here, several at once, with spaCy models off
(delivery, not NLP, is under test: a pool process starts in about 2 s instead of 10)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner

from worker.faults import battery, command
from worker.faults.battery import article_text, near_copy, table
from worker.faults.proxy import TcpProxy
from worker.faults.redis_server import PrivateRedis, available

pytestmark = [pytest.mark.integration]

# Only delivery matters here: no spaCy model, no gazetteer.
LIGHT = {"spacy_models": {}, "entity_gazetteer": False}
# Faults whose messages come back through a sweep: a shorter visibility timeout, so the test
# takes seconds. The others keep the default; live workers renew their leases, so no healthy
# message is run twice and their exact execution counts are asserted.
SWEPT = {"visibility_timeout": 10, "unacked_restore_throttle": 1}
SWEPT_FAULTS = {"worker_kill", "worker_lost", "redis_restart", "redis_client_kill",
                "redis_pause"}


def test_near_copy_is_a_near_duplicate_and_articles_are_not():
    from datasketch import MinHash

    def minhash(text: str) -> MinHash:
        words = text.lower().split()
        m = MinHash(num_perm=128)
        m.update_batch([" ".join(words[i:i + 5]).encode() for i in range(len(words) - 4)])
        return m

    text = article_text(1)
    assert minhash(text).jaccard(minhash(near_copy(text))) >= 0.6
    assert minhash(text).jaccard(minhash(article_text(2))) < 0.1


def test_table_has_one_row_per_fault_with_redelivery_and_wall_time():
    ledger = battery.Ledger("crash_after_commit", 4, 4, 0, 0, 0, "2/2/2", 1.25, 250.0, "x",
                            redelivery_s=0.42, wall_s=12.0)
    lines = table([ledger]).splitlines()
    header = [cell.strip() for cell in lines[0].split("|")]
    row = [cell.strip() for cell in lines[2].split("|")]
    assert row[1] == "crash_after_commit"
    assert row[header.index("redelivery s")] == "0.4"
    assert row[header.index("recovery s")] in ("1.2", "1.3")
    assert row[header.index("wall s")] == "12.0"


def test_command_offers_every_fault_of_the_battery():
    assert command.FAULT_NAMES == list(battery.FAULTS)


def test_full_counts_are_the_issues():
    faults = battery.FAULTS
    assert faults["sigkill_child"].full == 1000
    assert faults["publish_twice"].full == 1000
    assert faults["near_duplicates"].full == 500
    assert faults["flood"].full >= 10_000  # 20,000 with --count flood=20000
    assert faults["store_unavailable"].full_params == {"outage_s": 30}


@pytest.mark.skipif(not available(), reason="redis-server not installed")
def test_private_redis_keeps_its_data_across_a_restart(tmp_path):
    server = PrivateRedis(tmp_path)
    try:
        client = server.client()
        client.rpush("queue", "message")
        server.stop()
        server.start()
        assert server.client().lrange("queue", 0, -1) == [b"message"]
    finally:
        server.close()


def test_proxy_cut_refuses_and_restore_accepts(pg_schema_url):
    import psycopg

    proxy = TcpProxy("127.0.0.1", 5432)
    url = pg_schema_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            proxy.cut()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=3)
        proxy.restore()
        with psycopg.connect(url, connect_timeout=3) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        proxy.close()


@pytest.mark.slow
def test_command_prints_one_json_ledger_per_fault(settings_for, monkeypatch):
    """`enrich faults --fault ... --json`: the command path, on two cheap faults."""
    settings = settings_for(**LIGHT)
    monkeypatch.setattr(command, "get_settings", lambda: settings)
    result = CliRunner().invoke(command.faults_command,
                                ["--fault", "publish_twice", "--fault", "near_duplicates",
                                 "-n", "2", "--json"], catch_exceptions=False)
    ledgers = {row["fault"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert set(ledgers) == {"publish_twice", "near_duplicates"}
    assert ledgers["publish_twice"]["published"] == 4 and ledgers["publish_twice"]["stored"] == 2
    assert ledgers["near_duplicates"]["stored"] == 4
    assert result.exit_code == 0, result.stderr


@pytest.mark.slow
def test_every_fault_loses_nothing_stores_nothing_twice_and_keeps_the_workers_up(
        settings_for, redis_url):
    """The default (small) variant of every fault but the two below, four at a time."""
    names = [name for name in battery.FAULTS
             if name not in ("store_unavailable", "outlives_visibility")]

    def run(name: str) -> battery.Ledger:
        settings = settings_for(**LIGHT, **(SWEPT if name in SWEPT_FAULTS else {}))
        return battery.run_fault(name, settings, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        ledgers = {lg.fault: lg for lg in pool.map(run, names)}
    print("\n" + table(list(ledgers.values())))
    for name, ledger in ledgers.items():
        # Nothing lost here either: the transport moves a popped message into its consumer's
        # pending list atomically (BLMOVE), so a worker killed or a connection cut right
        # after the pop leaves it in Redis (kombu's BRPOP lost it: seen in most worker_kill
        # runs before).
        # One precondition can miss on a loaded machine: the killed worker may hold no
        # message at the kill (still starting). That is not a delivery problem; the sweep
        # bringing a dead worker's messages back is also timed in tests/test_transport.py.
        problems = [p for p in ledger.problems
                    if not (name == "worker_kill" and p.startswith("the killed worker held no"))]
        assert problems == [], (name, ledger)
        assert ledger.lost == 0 and ledger.stored_twice == 0, (name, ledger)
    assert ledgers["sigkill_child"].executions == "1/1/1"
    assert ledgers["sigkill_child"].redelivery_s is not None
    assert ledgers["crash_after_commit"].executions == "2/2/2"
    assert ledgers["poison"].dead_lettered == 1
    assert ledgers["publish_twice"].executions == "2/2/2"
    assert ledgers["flood"].stored == battery.FAULTS["flood"].small


@pytest.mark.slow
def test_a_task_outliving_the_visibility_timeout_is_still_one_document(settings_for):
    """Redis hands the slow task's message out again meanwhile (or the worker keeps it):
    one document, never a duplicate of itself, no pool process killed."""
    ledger = battery.run_fault("outlives_visibility", settings_for(**LIGHT, **SWEPT),
                               timeout=120)
    print(f"\n{table([ledger])}")
    assert ledger.ok, ledger.problems
    assert (ledger.stored, ledger.lost) == (ledger.published, 0)


@pytest.mark.slow
def test_store_outage_through_the_proxy(settings_for, pg_url):
    """PostgreSQL unreachable for a few seconds (a proxy cut, the server untouched)."""
    ledger = battery.run_fault("store_unavailable", settings_for(**LIGHT), store_url=pg_url,
                               timeout=120)
    print(f"\n{table([ledger])}")
    assert ledger.ok, ledger.problems
    assert (ledger.published, ledger.stored, ledger.lost) == (4, 4, 0)
