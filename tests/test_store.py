"""Results stores (SQLite and PostgreSQL): upserts by id, counts, export, migrations once."""

from __future__ import annotations

import sqlite3

import pytest

from worker.errors import ConfigurationError
from worker.store import PostgresStore, SQLiteStore, open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'store.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url):
    opened = open_store(store_url)
    yield opened
    opened.close()


def document(doc_id: str, text: str = "The ferry stays.", **extra) -> dict:
    doc = {
        "schema_version": 1,
        "id": doc_id,
        "url": f"https://example.org/{doc_id}",
        "source": "gazette",
        "title": "Ferry",
        "published_at": None,
        "language": {"code": "en", "confidence": 0.99, "method": "langdetect"},
        "text": text,
        "removed": [],
        "entities": [],
        "dedupe": {"content_hash": "h-" + doc_id, "duplicate_of": None, "similarity": None},
        "pipeline": {"version": "test", "timings_ms": {}, "notes": {}},
        "metadata": {},
        "processed_at": "2025-01-02T03:04:05+00:00",
    }
    doc.update(extra)
    return doc


def migration_rows(url: str) -> list[int]:
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite://").removeprefix("/")
        with sqlite3.connect(path) as conn:
            return [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    import psycopg

    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]


def test_open_store_picks_backend_by_url(store, store_url):
    """sqlite:/// opens SQLiteStore; postgresql:// opens PostgresStore."""
    expected = SQLiteStore if store_url.startswith("sqlite:") else PostgresStore
    assert isinstance(store, expected)


def test_upsert_twice_keeps_one_row_and_counts_writes(store):
    """Writing the same id twice leaves one row, writes()==2, and get() returns the last version."""
    store.upsert(document("a1", text="first version"))
    store.upsert(document("a1", text="second version",
                          dedupe={"content_hash": "h2", "duplicate_of": "a0", "similarity": 0.8}))
    assert store.count() == 1
    assert store.writes("a1") == 2
    got = store.get("a1")
    assert got["text"] == "second version"
    assert got["dedupe"]["duplicate_of"] == "a0"


def test_get_and_writes_of_unknown_id(store):
    """An unknown id gives None and zero writes."""
    assert store.get("missing") is None
    assert store.writes("missing") == 0


def test_get_returns_the_stored_document(store):
    """A stored document round-trips unchanged, nested values and non-ASCII included."""
    doc = document("r1", text="Grüße aus Köln — 北京 ✓",
                   entities=[{"text": "Köln", "label": "GPE", "count": 1,
                              "mentions": [{"start": 10, "end": 14}]}],
                   metadata={"tags": ["a", "b"], "n": 3, "ok": True, "none": None})
    store.upsert(doc)
    assert store.get("r1") == doc


def test_count_and_iter_documents(store):
    """count() and iter_documents() see every stored document once."""
    for doc_id in ("d1", "d2", "d3"):
        store.upsert(document(doc_id))
    store.upsert(document("d2", text="updated"))
    assert store.count() == 3
    exported = list(store.iter_documents())
    assert sorted(d["id"] for d in exported) == ["d1", "d2", "d3"]
    assert {d["id"]: d["text"] for d in exported}["d2"] == "updated"


def test_empty_store(store):
    """A new store counts zero and exports nothing."""
    assert store.count() == 0
    assert list(store.iter_documents()) == []


def test_reopening_does_not_rerun_migrations(store_url):
    """Opening a store again keeps its data and schema_migrations keeps one row."""
    first = open_store(store_url)
    first.upsert(document("keep"))
    first.close()
    second = open_store(store_url)
    try:
        assert second.get("keep")["id"] == "keep"
        assert second.count() == 1
    finally:
        second.close()
    assert migration_rows(store_url) == ([1] if store_url.startswith("sqlite:") else [1, 2])


def test_postgresql_compresses_documents_with_lz4_where_the_server_has_it(pg_url):
    """The doc column is set to lz4 (faster than pglz) when the server offers it, and a
    stored document reads back whole."""
    import psycopg

    store = open_store(pg_url)
    try:
        big = document("big", text="Der Stadtrat hat am Dienstag getagt. " * 400)
        store.upsert(big)
        assert store.get("big")["text"] == big["text"]
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        offered = conn.execute("SELECT enumvals FROM pg_settings "
                               "WHERE name = 'default_toast_compression'").fetchone()
        method = conn.execute("SELECT attcompression FROM pg_attribute WHERE attrelid = "
                              "'documents'::regclass AND attname = 'doc'").fetchone()[0]
        stored = conn.execute("SELECT pg_column_compression(doc) FROM documents "
                              "WHERE id = 'big'").fetchone()[0]
    if offered is None or "lz4" not in offered[0]:
        pytest.skip("this PostgreSQL has no lz4: documents stay with pglz")
    assert (method, stored) == ("l", "lz4")


@pytest.mark.parametrize("hostile", [
    "Robert'); DROP TABLE documents;--",
    "' OR '1'='1",
    '"double" and \'single\' quotes; -- comment',
    "%s %(name)s ? $1 :param",
    "back\\slash \\u0000 and \\' escapes",
])
def test_hostile_strings_stored_verbatim(store, hostile):
    """Quotes and SQL-looking strings are stored and read back verbatim, and the table survives."""
    doc = document("q1", text=hostile, title=hostile, url=hostile, source=hostile,
                   metadata={hostile: hostile})
    store.upsert(doc)
    store.upsert(document("q2"))
    got = store.get("q1")
    assert got["text"] == hostile
    assert got["title"] == hostile
    assert got["metadata"] == {hostile: hostile}
    assert store.count() == 2


def test_hostile_id_is_just_an_id(store):
    """An id that looks like SQL finds only its own row."""
    store.upsert(document("x' OR '1'='1"))
    store.upsert(document("other"))
    assert store.get("x' OR '1'='1")["id"] == "x' OR '1'='1"
    assert store.get("' OR '1'='1") is None
    assert store.writes("x' OR '1'='1") == 1


def test_unknown_store_scheme_is_a_configuration_error():
    """A store URL that is neither sqlite nor postgresql is refused."""
    with pytest.raises(ConfigurationError):
        open_store("mysql://localhost/db")


def test_store_stays_usable_while_an_export_is_running(store):
    """get() and upsert() work between the rows of a running export (no lock held)."""
    for i in range(3):
        store.upsert(document(f"exp-{i}"))
    exported = []
    for doc in store.iter_documents():
        exported.append(doc["id"])
        assert store.get(doc["id"])["id"] == doc["id"]
    store.upsert(document("exp-late"))
    assert exported == ["exp-0", "exp-1", "exp-2"]
    assert store.count() == 4


def test_sqlite_export_pages_through_more_rows_than_one_batch(tmp_path):
    """Keyset paging returns every row once, in order, across batch boundaries."""
    from worker.store import SQLiteStore

    store = SQLiteStore(f"sqlite:///{tmp_path / 'paging.db'}")
    for i in range(7):
        store.upsert(document(f"p-{i}"))
    assert [d["id"] for d in store.iter_documents(batch=3)] == [f"p-{i}" for i in range(7)]


def _open_at_barrier(path: str, barrier) -> None:
    from worker.store import open_store

    barrier.wait()
    open_store(f"sqlite:///{path}").close()


def test_processes_opening_a_new_sqlite_file_together_all_succeed(tmp_path):
    """Six processes migrating one new SQLite file at the same instant: none fails on
    "table already exists", and the schema is there once."""
    import multiprocessing
    import sqlite3

    path = tmp_path / "race.db"
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(6)
    processes = [context.Process(target=_open_at_barrier, args=(str(path), barrier))
                 for _ in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0] * 6
    with sqlite3.connect(path) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    assert sorted(versions) == sorted(set(versions)) and versions
