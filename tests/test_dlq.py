"""`enrich dlq list|show|replay|purge` against the real Redis (db 15, own queue and prefix)."""

from __future__ import annotations

import base64
import json

import pytest
from click.testing import CliRunner
from kombu.exceptions import OperationalError

from worker import deadletter, dlq, producer
from worker.deadletter import DeadLetters
from worker.faults.harness import enrich, start_worker, stop_worker, wait_until
from worker.producer import publish
from worker.store import open_store

pytestmark = pytest.mark.integration

CLEANED = {"id": "art-1", "url": None, "source": None, "title": "Ferry", "metadata": {},
           "text": "The harbour authority approved a new ferry timetable for the islands.",
           "language": {"code": "en", "confidence": 0.99, "method": "langdetect"},
           "removed": [], "pipeline": {"timings_ms": {"clean": 0.1, "language": 1.0},
                                       "notes": {}}}


@pytest.fixture
def settings(settings_for, redis_client, monkeypatch):
    made = settings_for()
    monkeypatch.setattr(dlq, "get_settings", lambda: made)
    yield made
    redis_client.delete(made.queue, made.dead_letter_key)


@pytest.fixture
def letters(settings, redis_client) -> DeadLetters:
    return DeadLetters(redis_client, settings.dead_letter_key)


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(dlq.dlq, list(args), input=input, catch_exceptions=False)


def add(letters: DeadLetters, *, article_id="art-1", stage="entities",
        reason="internal", payload=None, task="enrich.article") -> dict:
    record = deadletter.entry(article_id=article_id, task=task, stage=stage,
                              task_id="t-" + article_id, reason=reason, error=f"{reason} happened",
                              payload=CLEANED if payload is None else payload)
    letters.add(record)
    return record


def add_malformed(letters: DeadLetters) -> dict:
    record = {"entry_id": deadletter.new_entry_id(), "id": None, "task": None,
              "task_id": None, "queue": "q", "reason": "malformed_message",
              "error": "not JSON: JSONDecodeError", "attempts": 1, "at": "2026-01-01T00:00:00",
              "payload": None, "payload_truncated": "garbage"}
    letters.add(record)
    return record


def queued_tasks(redis_client, queue: str) -> list[tuple[str, str, object]]:
    """(task, stage it starts at, first argument) of each queued message."""
    found = []
    for raw in redis_client.lrange(queue, 0, -1):
        message = json.loads(raw)
        args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
        assert not embed.get("chain"), "one message per article, no chain"
        found.append((message["headers"]["task"], kwargs.get("start", "clean"), args[0]))
    return found


def test_list_shows_each_entry_with_its_reason_and_whether_it_can_be_replayed(letters):
    first = add(letters)
    add_malformed(letters)
    result = run("list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["ENTRY", "AT", "(UTC)"]
    assert lines[1].startswith(first["entry_id"]) and "internal" in lines[1]
    assert " entities " in lines[1] and " yes " in lines[1]
    assert "malformed_message" in lines[2] and " no " in lines[2]
    assert lines[-1] == "2 dead letters"
    as_json = [json.loads(line) for line in run("list", "--json").output.splitlines()]
    assert [e["replayable"] for e in as_json] == [True, False]
    assert all("payload" not in e for e in as_json)
    only = run("list", "--reason", "malformed_message").output
    assert "internal" not in only and "1 dead letters" in only


def test_list_of_an_empty_list(settings):
    assert run("list").output.strip() == "no dead letters"


def test_show_by_entry_id_or_unique_article_id(letters):
    record = add(letters)
    by_entry = run("show", record["entry_id"])
    assert by_entry.exit_code == 0
    assert json.loads(by_entry.stdout)["payload"] == CLEANED
    assert json.loads(run("show", "art-1").stdout)["entry_id"] == record["entry_id"]
    assert json.loads(run("show", "#0").stdout)["entry_id"] == record["entry_id"]


def test_show_refuses_an_ambiguous_or_unknown_id(letters):
    first, second = add(letters), add(letters)
    ambiguous = run("show", "art-1")
    assert ambiguous.exit_code == 1
    assert first["entry_id"] in ambiguous.stderr and second["entry_id"] in ambiguous.stderr
    assert run("show", "nope").exit_code == 1


def test_replay_sends_the_payload_to_the_stage_it_failed_at_then_removes_it(
    letters, settings, redis_client
):
    """Replay = one article task starting at the failed stage with that stage's input."""
    keep = add(letters, article_id="other")
    record = add(letters)
    result = run("replay", record["entry_id"])
    assert result.exit_code == 0, result.output
    assert "replayed 1, not replayed 0" in result.output
    assert queued_tasks(redis_client, settings.queue) == [("enrich.article", "entities", CLEANED)]
    assert [e["entry_id"] for e in letters.list()] == [keep["entry_id"]]


def test_replay_from_clean_and_from_store(letters, settings, redis_client):
    """A raw article starts at clean (no start argument at all); a document at the store."""
    raw = {"id": "raw-1", "text": "Some text."}
    add(letters, article_id="raw-1", stage="clean", reason="invalid_article", payload=raw)
    add(letters, article_id="doc-1", stage="store", reason="store_unavailable")
    assert run("replay", "--all").exit_code == 0
    assert sorted(queued_tasks(redis_client, settings.queue)) == sorted([
        ("enrich.article", "clean", raw), ("enrich.article", "store", CLEANED)])
    assert letters.count() == 0


def test_entry_from_a_per_stage_task_replays_from_that_stage(letters, settings, redis_client):
    """Entries written when each stage was its own task (task enrich.dedupe, no stage field)
    replay from that stage."""
    record = deadletter.entry(article_id="old", task="enrich.dedupe", reason="internal",
                              error="boom", payload=CLEANED)
    del record["stage"]
    letters.add(record)
    assert run("replay", "old").exit_code == 0
    assert queued_tasks(redis_client, settings.queue) == [("enrich.article", "dedupe", CLEANED)]


def test_malformed_message_cannot_be_replayed_and_stays(letters, settings, redis_client):
    record = add_malformed(letters)
    result = run("replay", record["entry_id"])
    assert result.exit_code == 1
    assert "malformed message" in result.stderr and "no payload" in result.stderr
    assert letters.count() == 1
    assert redis_client.llen(settings.queue) == 0


def test_entry_whose_payload_was_not_kept_cannot_be_replayed(letters):
    huge = {"id": "big", "text": "x" * 1_100_000}
    record = deadletter.entry(article_id="big", task="enrich.article", stage="language",
                              reason="internal",
                              error="boom", payload=huge)
    assert record["payload"] is None
    letters.add(record)
    result = run("replay", "big")
    assert result.exit_code == 1 and "payload was not kept" in result.stderr
    assert letters.count() == 1


def test_replay_all_skips_what_cannot_be_replayed(letters, settings, redis_client):
    add(letters, article_id="a", reason="store_unavailable")
    add_malformed(letters)
    add(letters, article_id="b", reason="internal")
    result = run("replay", "--all", "--reason", "store_unavailable")
    assert result.exit_code == 0 and "replayed 1, not replayed 0" in result.output
    assert [e["reason"] for e in letters.list()] == ["malformed_message", "internal"]
    result = run("replay", "--all")
    assert result.exit_code == 1 and "replayed 1, not replayed 1" in result.output
    assert [e["reason"] for e in letters.list()] == ["malformed_message"]
    assert redis_client.llen(settings.queue) == 2


def test_failed_send_keeps_the_entry(letters, monkeypatch):
    add(letters)

    def broken(*_, **__):
        raise OperationalError("Error 111 connecting to redis://:hunter2@broker:6379")

    monkeypatch.setattr(producer, "send_article", broken)
    result = run("replay", "art-1")
    assert result.exit_code == 1
    assert "sending failed, entry kept" in result.stderr
    assert "hunter2" not in result.stderr
    assert letters.count() == 1


def test_replay_needs_ids_or_all(settings):
    assert run("replay").exit_code == 2
    assert run("replay", "x", "--all").exit_code == 2


def test_purge_asks_first_and_deletes_only_with_yes(letters):
    add(letters)
    add_malformed(letters)
    declined = run("purge", input="n\n")
    assert declined.exit_code == 1 and letters.count() == 2
    assert run("purge", "--yes").output.strip() == "deleted 2 dead letters"
    assert letters.count() == 0
    assert run("purge", "--yes").output.strip() == "no dead letters"


def test_purge_keeps_entries_added_after_it_counted(letters, monkeypatch):
    add(letters, article_id="old")
    real_count = DeadLetters.count

    def count_then_a_new_one_arrives(self):
        seen = real_count(self)
        add(letters, article_id="new")
        return seen

    monkeypatch.setattr(DeadLetters, "count", count_then_a_new_one_arrives)
    assert "deleted 1 dead letters" in run("purge", "--yes").output
    assert [e["id"] for e in letters.list()] == ["new"]


@pytest.mark.slow
def test_store_outage_dead_letters_then_replay_stores_them(tmp_path, settings_for, redis_client):
    """The operator's path: PostgreSQL unreachable -> store_unavailable dead letters (no
    retries here); store back -> `enrich dlq replay --all` -> stored once; list empty."""
    good = settings_for()
    down = good.model_copy(update={
        "store_url": "postgresql://postgres:pw@127.0.0.1:1/none", "max_retries": 0})
    letters = DeadLetters(redis_client, good.dead_letter_key)
    worker = start_worker(down, tmp_path / "down.log")
    try:
        publish([{"id": f"outage-{i}", "text": text} for i, text in enumerate((
            "Lifeboat volunteers rescued two walkers cut off by the tide near the headland.",
            "The school board voted to keep the village primary open for another three years.",
        ))], settings=down)
        wait_until(lambda: letters.count() == 2, 90,
                   what=f"two store_unavailable dead letters (log {tmp_path / 'down.log'})")
    finally:
        stop_worker(worker)
    assert {e["reason"] for e in letters.list()} == {"store_unavailable"}
    # Published together: one enrich.batch message, each article dead-lettered on its own.
    assert {(e["task"], e["stage"]) for e in letters.list()} == {("enrich.batch", "store")}
    assert sorted(e["id"] for e in letters.list()) == ["outage-0", "outage-1"]
    listed = enrich("dlq", "list", settings=good)
    assert listed.returncode == 0 and b"store_unavailable" in listed.stdout
    replayed = enrich("dlq", "replay", "--all", settings=good)
    assert replayed.returncode == 0, replayed.stderr.decode()
    assert b"replayed 2, not replayed 0" in replayed.stdout
    assert letters.count() == 0
    worker = start_worker(good, tmp_path / "good.log")
    store = open_store(good.store_url)
    try:
        wait_until(lambda: store.count() == 2, 90, what="the replayed articles stored")
        assert store.writes("outage-0") == 1 and store.writes("outage-1") == 1
        assert store.get("outage-1")["language"]["code"] == "en"
    finally:
        stop_worker(worker)
        store.close()
        redis_client.delete(good.queue, good.dead_letter_key)
