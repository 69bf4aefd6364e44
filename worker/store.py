"""Results stores: SQLite (embedded default) and PostgreSQL (psycopg 3), by ENRICH_STORE_URL.

Writes are upserts by document id, so a redelivered article never makes a second row;
``writes`` counts how often a document was written (executions per article). The schema
is created or migrated when a store opens.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from worker import jsontext
from worker.errors import ConfigurationError, StoreUnavailable

# (version, statements). Append, never edit: stores migrate forward on open.
_SQLITE_MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE documents (
            id TEXT PRIMARY KEY,
            url TEXT, source TEXT, language TEXT, duplicate_of TEXT, content_hash TEXT,
            doc TEXT NOT NULL,
            stored_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            writes INTEGER NOT NULL DEFAULT 1)""",
        "CREATE INDEX documents_stored_at ON documents (stored_at)",
        "CREATE INDEX documents_duplicate_of ON documents (duplicate_of)",
    ]),
]
_POSTGRES_MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE documents (
            id TEXT PRIMARY KEY,
            url TEXT, source TEXT, language TEXT, duplicate_of TEXT, content_hash TEXT,
            doc JSONB NOT NULL,
            stored_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            writes INTEGER NOT NULL DEFAULT 1)""",
        "CREATE INDEX documents_stored_at ON documents (stored_at)",
        "CREATE INDEX documents_duplicate_of ON documents (duplicate_of)",
    ]),
    # A document (about 5 KB of JSONB) is compressed when stored: lz4 does it faster than
    # the default pglz (batches of 8 corpus documents here: 0.45 -> 0.31-0.39 ms of write
    # time per document) and reads back faster. Only where the server has lz4 (PostgreSQL
    # 14+ built with it, as Debian's and the official images are); elsewhere pglz stays.
    # New rows only: stored documents keep their compression until rewritten.
    (2, [
        """DO $$ BEGIN
             IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'
                        AND 'lz4' = ANY(enumvals)) THEN
               ALTER TABLE documents ALTER COLUMN doc SET COMPRESSION lz4;
             END IF;
           END $$""",
    ]),
]


class Store(Protocol):
    url: str

    def upsert(self, doc: dict[str, Any]) -> None: ...
    def upsert_many(self, docs: list[dict[str, Any]]) -> None: ...
    def get(self, doc_id: str) -> dict[str, Any] | None: ...
    def writes(self, doc_id: str) -> int: ...
    def iter_documents(self) -> Iterator[dict[str, Any]]: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


def doc_json(doc: dict[str, Any]) -> str:
    """The document as JSON text (worker.jsontext: orjson, the standard library where it
    refuses)."""
    return jsontext.dumps(doc)


def _columns(doc: dict[str, Any]) -> tuple:
    return (
        doc["id"], doc.get("url"), doc.get("source"),
        (doc.get("language") or {}).get("code"),
        (doc.get("dedupe") or {}).get("duplicate_of"),
        (doc.get("dedupe") or {}).get("content_hash"),
        doc_json(doc),
    )


_SQLITE_TIMEOUT = 30  # seconds a statement waits for another process's lock


class SQLiteStore:
    def __init__(self, url: str) -> None:
        self.url = url
        path = url.removeprefix("sqlite://").removeprefix("/") or ":memory:"
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=_SQLITE_TIMEOUT)
        self._lock = threading.Lock()
        with self._lock:
            if path != ":memory:":
                self._wal()
            self._migrate()

    def _wal(self) -> None:
        """WAL mode, waiting for other processes as any statement does. Switching a new file
        to WAL can fail at once with "database is locked" while another process opening it
        holds its lock (SQLite does not call the busy handler there: seen with 6 processes
        opening one new file together, about 1 run in 12), so it is retried up to the same
        timeout. The mode is kept in the file: once one process has set it, the others'
        PRAGMA changes nothing."""
        deadline = time.monotonic() + _SQLITE_TIMEOUT
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> None:
        conn = self._conn
        # One migrator at a time: BEGIN IMMEDIATE takes the file's write lock, so processes
        # opening a new file together wait for each other (up to the 30 s timeout) instead of
        # both creating the tables ("table documents already exists" was seen).
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, statements in _SQLITE_MIGRATIONS:
                if version not in done:
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (?)",
                                 (version,))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def upsert(self, doc: dict[str, Any]) -> None:
        self.upsert_many([doc])

    def upsert_many(self, docs: list[dict[str, Any]]) -> None:
        now = datetime.now(UTC).isoformat()
        with self._lock, self._conn:
            self._conn.executemany(
                """INSERT INTO documents
                   (id, url, source, language, duplicate_of, content_hash, doc, stored_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET
                     url = excluded.url, source = excluded.source, language = excluded.language,
                     duplicate_of = excluded.duplicate_of, content_hash = excluded.content_hash,
                     doc = excluded.doc, updated_at = excluded.updated_at,
                     writes = documents.writes + 1""",
                [(*_columns(doc), now, now) for doc in docs],
            )

    def get(self, doc_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT doc FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def writes(self, doc_id: str) -> int:
        with self._lock:
            row = self._conn.execute("SELECT writes FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return row[0] if row else 0

    def iter_documents(self, batch: int = 500) -> Iterator[dict[str, Any]]:
        """Every document, oldest first, read in batches (keyset paging, bounded memory)."""
        after = ("", "")
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT stored_at, id, doc FROM documents WHERE (stored_at, id) > (?, ?)"
                    " ORDER BY stored_at, id LIMIT ?", (*after, batch)).fetchall()
            for _, _, doc in rows:
                yield json.loads(doc)
            if len(rows) < batch:
                return
            after = rows[-1][:2]

    def count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM documents").fetchone()[0]

    def close(self) -> None:
        self._conn.close()


class PostgresStore:
    """PostgreSQL through psycopg 3; reconnects after a lost connection."""

    def __init__(self, url: str) -> None:
        import psycopg  # imported here: the producer and embedded mode never need it

        self._psycopg = psycopg
        self.url = url
        self._conn = None
        self._lock = threading.Lock()
        with self._lock:
            self._run(self._migrate)

    def _connect(self):
        if self._conn is None or self._conn.closed:
            self._conn = self._psycopg.connect(self.url, connect_timeout=5)
        return self._conn

    def _run(self, fn):
        try:
            return fn(self._connect())
        except self._psycopg.OperationalError as exc:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc}".strip()) from exc

    def _migrate(self, conn) -> None:
        with conn.transaction():
            # One migrator at a time: workers starting together must not race.
            conn.execute("SELECT pg_advisory_xact_lock(7213401)")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, statements in _POSTGRES_MIGRATIONS:
                if version in done:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))

    def upsert(self, doc: dict[str, Any]) -> None:
        self.upsert_many([doc])

    def upsert_many(self, docs: list[dict[str, Any]]) -> None:
        """All in one transaction (one commit, one round trip: psycopg pipelines executemany);
        a document twice in ``docs`` is written twice, like two upserts."""
        def write(conn):
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(
                    """INSERT INTO documents
                       (id, url, source, language, duplicate_of, content_hash, doc)
                       VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)
                       ON CONFLICT (id) DO UPDATE SET
                         url = excluded.url, source = excluded.source,
                         language = excluded.language, duplicate_of = excluded.duplicate_of,
                         content_hash = excluded.content_hash, doc = excluded.doc,
                         updated_at = now(), writes = documents.writes + 1""",
                    [_columns(doc) for doc in docs],
                )

        with self._lock:
            self._run(write)

    def _one(self, sql: str, params: tuple = ()):
        def query(conn):
            with conn.transaction():
                return conn.execute(sql, params).fetchone()

        with self._lock:
            return self._run(query)

    def get(self, doc_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT doc FROM documents WHERE id = %s", (doc_id,))
        return row[0] if row else None

    def writes(self, doc_id: str) -> int:
        row = self._one("SELECT writes FROM documents WHERE id = %s", (doc_id,))
        return row[0] if row else 0

    def count(self) -> int:
        return self._one("SELECT count(*) FROM documents")[0]

    def iter_documents(self) -> Iterator[dict[str, Any]]:
        """Every document, oldest first, through a server-side cursor on its own connection
        (so get() and upsert() stay usable while an export runs)."""
        try:
            conn = self._psycopg.connect(self.url, connect_timeout=5)
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc}".strip()) from exc
        with conn, conn.transaction(), conn.cursor(name="export") as cursor:
            cursor.itersize = 500
            cursor.execute("SELECT doc FROM documents ORDER BY stored_at, id")
            yield from (doc for (doc,) in cursor)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def open_store(url: str) -> Store:
    if url.startswith("sqlite:"):
        return SQLiteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise ConfigurationError(
        f"ENRICH_STORE_URL must start with sqlite:/// or postgresql:// (got {url.split(':')[0]!r})"
    )
