"""The product path end to end: `enrich publish` -> real Celery worker -> PostgreSQL, and
the same stages in embedded mode (`enrich run`). The seed article is the first case."""

from __future__ import annotations

import json

import pytest

from tests.workers import enrich, start_worker, stop_worker, wait_until
from worker.app import create_app
from worker.deadletter import DeadLetters
from worker.store import open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DROPPED_SENTENCE = ("Experts have said that Putin will try to annex the Donbas region into "
                    "Russia in coming months.")


def edited_copy(seed: str) -> str:
    """The seed with another headline, an extra ad line and one sentence removed."""
    lines = seed.splitlines()
    headline = next(i for i, line in enumerate(lines) if line.startswith("Russia says"))
    lines[headline] = "Moscow claims Lysychansk as Ukraine's forces pull back"
    lines.insert(headline + 4, "Story continues below advertisement")
    text = "\n".join(lines)
    assert DROPPED_SENTENCE in text
    return text.replace(DROPPED_SENTENCE + " ", "")


def assert_seed_enriched(doc: dict) -> None:
    """What the issue asks of the seed article, wherever it was enriched."""
    assert doc["language"]["code"] == "en"
    lines = doc["text"].splitlines()
    assert "Advertisement" not in lines
    assert "Latest Headlines" not in doc["text"]
    assert doc["text"].count("Locals look at destroyed buildings in Lysychansk") == 1
    found = {(e["text"].lower(), e["label"]) for e in doc["entities"]}
    assert ("sergei shoigu", "PERSON") in found
    assert ("vladimir putin", "PERSON") in found
    assert {("lysychansk", "GPE"), ("lysychansk", "LOC")} & found
    assert ("institute for the study of war", "ORG") in found
    assert {r["reason"] for r in doc["removed"]} >= {"ad_marker", "duplicate", "navigation"}


def test_publish_enrich_store_in_postgres_with_dedupe_and_dead_letters(
    tmp_path, settings_for, pg_url, seed_text, redis_client
):
    """A real worker enriches the seed into PostgreSQL; an edited copy is its duplicate;
    bad input is rejected at publish or dead-lettered with its reason; the worker lives."""
    settings = settings_for(store_url=pg_url)
    worker = start_worker(settings, tmp_path / "worker.log", concurrency=2)
    store = open_store(pg_url)
    try:
        seed_file = tmp_path / "seed.txt"
        seed_file.write_text(seed_text, encoding="utf-8")
        published = enrich("publish", "--json", str(seed_file), settings=settings)
        assert published.returncode == 0, published.stderr.decode()
        (seed_id,) = json.loads(published.stdout)["ids"]

        doc = wait_until(lambda: store.get(seed_id), 120, what="the seed in PostgreSQL")
        assert_seed_enriched(doc)
        assert doc["dedupe"]["duplicate_of"] is None

        copy = tmp_path / "copy.jsonl"
        copy.write_text(json.dumps({"id": "seed-edited", "title": "Another title",
                                    "text": edited_copy(seed_text)}) + "\n")
        assert enrich("publish", str(copy), settings=settings).returncode == 0
        edited = wait_until(lambda: store.get("seed-edited"), 60, what="the edited copy")
        assert edited["dedupe"]["duplicate_of"] == seed_id
        assert edited["dedupe"]["similarity"] >= settings.dedupe_threshold

        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"id": "no-body", "title": "Only a title"}\n{not json\n')
        rejected = enrich("publish", str(bad), settings=settings)
        assert rejected.returncode == 1
        errors = rejected.stderr.decode()
        assert f"{bad}:1: invalid_article: neither text nor html has content" in errors
        assert f"{bad}:2: bad_json" in errors

        # Another producer bypasses validation; and someone pushes garbage on the queue key.
        create_app(settings).send_task("enrich.article", args=[{"id": "sneaky", "body": "x"}],
                                       queue=settings.queue)
        redis_client.lpush(settings.queue, b"\x80 definitely not a message")
        dead = DeadLetters(redis_client, settings.dead_letter_key)
        entries = wait_until(lambda: len(dead.list()) >= 2 and dead.list(), 60,
                             what="two dead letters")
        by_reason = {e["reason"]: e for e in entries}
        assert by_reason["invalid_article"]["id"] == "sneaky"
        assert "body" in by_reason["invalid_article"]["error"]
        assert by_reason["invalid_article"]["payload"] == {"id": "sneaky", "body": "x"}
        assert "not JSON" in by_reason["malformed_message"]["error"]

        status = wait_until(
            lambda: (s := json.loads(enrich("status", "--json", settings=settings).stdout))
            and s["queue_depth"] == 0 and s, 30, what="an empty queue")
        assert status == {"queue_depth": 0, "dead_letters": 2, "stored": 2}
        shown = enrich("get", seed_id, settings=settings)
        assert json.loads(shown.stdout)["id"] == seed_id
        assert worker.poll() is None, "the worker must survive bad input"
        assert store.writes(seed_id) == 1
    finally:
        stop_worker(worker)
        store.close()
    assert_task_logs_carry_ids_and_no_bodies(tmp_path / "worker.log", seed_text)


def assert_task_logs_carry_ids_and_no_bodies(log_path, seed_text: str) -> None:
    """Every line a task wrote names its article, task, chain and stage; no article text."""
    records = []
    for line in log_path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # Celery's start-up banner is plain text
    task_lines = [r for r in records if r.get("logger") == "worker.tasks"]
    assert any(r["event"] == "article enriched" for r in task_lines)
    for record in task_lines:
        assert record.get("task_id") and record.get("root_id") and record.get("stage"), record
        assert "article_id" in record, record
    enriched = [r for r in task_lines if r["event"] == "article enriched"]
    assert all(r["article_id"] for r in enriched)
    assert all(set(r["timings_ms"]) == {"clean", "language", "entities", "dedupe"}
               for r in enriched)
    body_sentence = "Locals look at destroyed buildings in Lysychansk"
    assert body_sentence in seed_text
    assert body_sentence not in log_path.read_text(), "article text leaked into the logs"


def test_embedded_run_enriches_in_input_order_without_a_broker(
    tmp_path, settings_for, seed_text
):
    """`enrich run` applies the same stages in process and finds the copy a duplicate."""
    settings = settings_for(broker_url="redis://127.0.0.1:1/0")  # unreachable on purpose
    seed_file = tmp_path / "seed.txt"
    seed_file.write_text(seed_text, encoding="utf-8")
    copy = tmp_path / "copy.jsonl"
    copy.write_text(json.dumps({"id": "seed-edited", "text": edited_copy(seed_text)}) + "\n"
                    + '{"id": "empty"}\n')
    out = tmp_path / "out.jsonl"
    result = enrich("run", str(seed_file), str(copy), "--output", str(out), settings=settings)
    assert result.returncode == 1  # one record rejected
    assert "invalid_article: neither text nor html" in result.stderr.decode()
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert_seed_enriched(first)
    assert second["id"] == "seed-edited"
    assert second["dedupe"]["duplicate_of"] == first["id"]
    stored = open_store(settings.store_url)
    assert stored.count() == 2 and stored.get(first["id"])["text"] == first["text"]


def test_embedded_run_reads_stdin_and_writes_stdout(settings_for, seed_text):
    """`enrich run -` takes a scraped text on stdin and prints one JSON document."""
    result = enrich("run", "-", settings=settings_for(), input=seed_text.encode())
    assert result.returncode == 0, result.stderr.decode()
    (line,) = result.stdout.decode().splitlines()
    assert_seed_enriched(json.loads(line))
