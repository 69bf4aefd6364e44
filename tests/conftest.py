"""Shared fixtures. Tests run against the real Redis and PostgreSQL on this machine.

Each test session gets its own Redis key prefix and queue name (on Redis db 15) and its
own PostgreSQL schema, so runs never see each other's data. When a service does not
answer, its tests fail under CI and skip with a message elsewhere.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SEED = SHARED / "seeds" / "000_d9cb9e079d900295.txt"
EVAL = SHARED / "eval"

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _unavailable(what: str, exc: Exception):
    message = f"{what} is not answering ({exc}); start it (see .ci/run)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def seed_text() -> str:
    if not SEED.exists():
        pytest.skip(f"seed article not found at {SEED} (../shared is absent)")
    return SEED.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    if not EVAL.exists():
        pytest.skip(f"evaluation data not found at {EVAL} (../shared/eval is absent)")
    return EVAL


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis at {REDIS_URL}", exc)
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_client) -> str:
    """A fresh Redis key prefix for one test; its keys are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(scope="session")
def pg_schema_url(run_id) -> str:
    """A PostgreSQL URL whose search_path is a schema made for this test session."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"test_{run_id}"
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL at {PG_URL}", exc)
    separator = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def pg_url(pg_schema_url):
    """A PostgreSQL URL with an empty `documents` table for this test."""
    import psycopg

    with psycopg.connect(pg_schema_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS documents, schema_migrations")
    return pg_schema_url


@pytest.fixture
def settings_for(redis_url, tmp_path):
    """Settings with this test's own queue, key prefix and a temporary SQLite store."""

    def make(**overrides) -> Settings:
        values = {
            "broker_url": redis_url,
            "queue": f"test-{uuid.uuid4().hex[:12]}",
            "key_prefix": f"test:{uuid.uuid4().hex[:12]}:",
            "store_url": f"sqlite:///{tmp_path / 'store.db'}",
            "log_format": "json",
        }
        values.update(overrides)
        return Settings(**values)

    return make


# The environment that gives a subprocess the same settings: the fault battery's own.
from worker.faults.harness import settings_env  # noqa: E402,F401


@pytest.fixture
def task_env(monkeypatch):
    """worker.tasks run in this process on `make(settings)`'s real resources (Redis, store),
    stage events captured in `.sent` instead of published; Redis keys removed after."""
    from types import SimpleNamespace

    from worker import tasks
    from worker.resources import Resources
    from worker.stage_events import StageEvents

    made: list[SimpleNamespace] = []

    def make(settings: Settings) -> SimpleNamespace:
        resources = Resources(settings)
        monkeypatch.setattr(tasks, "get_settings", lambda: settings)
        monkeypatch.setattr(tasks, "get_resources", lambda: resources)
        sent: list[list[dict]] = []
        monkeypatch.setattr(StageEvents, "send", lambda self: sent.append(self.events))
        made.append(SimpleNamespace(settings=settings, resources=resources, sent=sent))
        return made[-1]

    yield make
    for env in made:
        client = env.resources.broker_redis
        client.delete(env.settings.dead_letter_key, *client.keys(f"{env.settings.key_prefix}*"))
        env.resources.store.close()
