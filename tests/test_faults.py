"""The ledger battery (`enrich faults`, worker/faults), quick subset: faults injected into
real workers, then every article counted - nothing lost, nothing stored twice."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from worker.faults import battery, command
from worker.faults.battery import article_text, near_copy, table
from worker.faults.proxy import TcpProxy

pytestmark = [pytest.mark.integration]


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


def test_table_has_one_row_per_fault():
    ledger = battery.Ledger("crash_after_commit", 4, 4, 0, 0, 0, "2/2/2", 1.25, 250.0, "x")
    lines = table([ledger]).splitlines()
    assert lines[0].startswith("| fault ") and "executions/article" in lines[0]
    assert lines[2].split("|")[1].strip() == "crash_after_commit"
    assert "| 1.2 " in lines[2] or "| 1.3 " in lines[2]


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
def test_quick_battery_loses_nothing_and_stores_nothing_twice(settings_for, monkeypatch,
                                                               redis_client):
    """`enrich faults --quick`: SIGKILL of pool processes mid-task, a crash after the store
    committed (before the ack), the same articles published twice at once, near-duplicate
    pairs at the same instant."""
    settings = settings_for()
    monkeypatch.setattr(command, "get_settings", lambda: settings)
    result = CliRunner().invoke(command.faults_command, ["--quick", "-n", "3", "--json",
                                                         "--timeout", "120"],
                                catch_exceptions=False)
    ledgers = {row["fault"]: row for row in map(json.loads, result.stdout.splitlines())}
    print("\n" + table([battery.Ledger(**row) for row in ledgers.values()]))
    assert set(ledgers) == set(battery.QUICK)
    for name, row in ledgers.items():
        assert row["problems"] == [], (name, row)
        assert row["lost"] == 0 and row["stored_twice"] == 0, (name, row)
    assert ledgers["sigkill_child"]["executions"] == "1/1/1"
    assert ledgers["crash_after_commit"]["executions"] == "2/2/2"
    assert ledgers["publish_twice"]["published"] == 6
    assert ledgers["publish_twice"]["stored"] == 3
    assert ledgers["near_duplicates"]["stored"] == 6
    assert result.exit_code == 0


@pytest.mark.slow
def test_store_outage_through_the_proxy(settings_for, pg_url):
    """PostgreSQL unreachable for a few seconds (a proxy cut, the server untouched)."""
    ledger = battery.run_fault("store_unavailable", settings_for(), articles=4,
                               store_url=pg_url, timeout=120)
    print(f"\n{table([ledger])}")
    assert ledger.ok, ledger.problems
    assert (ledger.published, ledger.stored, ledger.lost) == (4, 4, 0)
