"""Several articles in one message (enrich.batch, worker/tasks.py) and the producer that
groups them (worker/producer.py).

The batch runs the real stages and writes to the real PostgreSQL; dead letters and delivery
counts go to the real Redis. Only the task object is a stand-in: it records what the batch
hands on (send_task) instead of publishing it.
"""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest
import redis
from celery.exceptions import Reject as CeleryReject
from kombu.clocks import LamportClock

from worker import tasks
from worker.app import ARTICLE_TASK, BATCH_TASK, CHAIN
from worker.errors import StoreUnavailable
from worker.producer import gathered

STORY = ("The city council approved a new budget for public libraries on Tuesday, after a "
         "long debate about opening hours in the northern districts. Council members said the "
         "money would pay for longer evening hours and a mobile library for villages. {n}")


def _articles(count: int, seed_text: str) -> list[dict]:
    first = {"id": "b-0", "url": "https://example.org/0", "text": seed_text}
    rest = [{"id": f"b-{n}", "url": f"https://example.org/{n}",
             "text": STORY.format(n=f"Story number {n} of {count} with its own ending.") * (n + 1)}
            for n in range(1, count)]
    return [first, *rest]


@pytest.fixture
def env(settings_for, pg_url, task_env):
    return task_env(settings_for(store_url=pg_url))


class FakeBatchTask:
    """What the batch reads of a bound Celery task; send_task records the hand-offs."""

    name = BATCH_TASK

    def __init__(self, task_id: str = "batch-1", fail_publish: bool = False) -> None:
        self.handed: list[dict] = []
        self.fail_publish = fail_publish
        self.app = SimpleNamespace(clock=LamportClock(), send_task=self._send,
                                   conf=SimpleNamespace(worker_send_task_events=True))
        self.request = SimpleNamespace(id=task_id, retries=0, root_id=None, parent_id=None,
                                       hostname="test@host",
                                       delivery_info={"routing_key": "the-queue"})

    def _send(self, name, **options):
        if self.fail_publish:
            raise ConnectionError("broker down")
        self.handed.append({"name": name, **options})


def _stored(env) -> list[str]:
    return sorted(doc["id"] for doc in env.resources.store.iter_documents())


def test_a_batch_stores_every_article_in_one_write_and_shows_each_stage(env, seed_text,
                                                                        monkeypatch):
    """Every article stored, by one upsert_many; a stage event per article and stage."""
    articles = _articles(3, seed_text)
    writes = []
    upsert_many = env.resources.store.upsert_many
    monkeypatch.setattr(env.resources.store, "upsert_many",
                        lambda docs: (writes.append(len(docs)), upsert_many(docs)))
    task = FakeBatchTask()
    assert tasks._run_batch(task, articles) is None
    assert _stored(env) == ["b-0", "b-1", "b-2"]
    assert writes == [3] and task.handed == []
    (events,) = env.sent
    *stages, own = events
    shown = [(e["args"], e["name"]) for e in stages]
    assert sorted(shown) == sorted((f"({{'id': '{a['id']}'}},)", f"enrich.{stage}")
                                   for a in articles for stage in CHAIN)
    assert {e["type"] for e in events} == {"task-succeeded"}
    assert {e["parent_id"] for e in stages} == {"batch-1"}
    # The batch's own event in the same message, its articles named by id only.
    assert (own["uuid"], own["name"], own["args"]) == \
        ("batch-1", BATCH_TASK, "([{'id': 'b-0'}, {'id': 'b-1'}, {'id': 'b-2'}],)")
    assert own["runtime"] >= max(e["runtime"] for e in stages)
    stored = env.resources.store.get("b-0")
    assert stored["language"]["code"] == "en" and stored["dedupe"]["duplicate_of"] is None


def test_an_article_rejected_in_a_batch_is_dead_lettered_and_the_others_stored(env, seed_text):
    """An article with nothing left after cleaning goes to dead letters with its stage; the
    rest of the batch is stored."""
    articles = _articles(3, seed_text)
    articles[1] = {"id": "b-empty", "url": "https://example.org/e", "text": "Advertisement"}
    tasks._run_batch(FakeBatchTask(), articles)
    assert _stored(env) == ["b-0", "b-2"]
    letters = env.resources.broker_redis.lrange(env.settings.dead_letter_key, 0, -1)
    assert len(letters) == 1
    letter = json.loads(letters[0])
    assert (letter["id"], letter["stage"], letter["reason"], letter["task"]) == \
        ("b-empty", "clean", "empty_after_cleaning", BATCH_TASK)
    assert letter["payload"]["text"] == "Advertisement"
    failed = [e for e in env.sent[0] if e["type"] == "task-failed"]
    assert [(e["name"], e["args"]) for e in failed] == [("enrich.clean", "({'id': 'b-empty'},)")]


def test_a_transient_failure_hands_that_article_on_as_its_own_retry(env, seed_text,
                                                                   monkeypatch):
    """The failing article goes on as enrich.article from the failing stage, with the
    document so far, after the first retry's countdown; the others are stored."""
    articles = _articles(3, seed_text)
    entities = env.resources.pipeline.stages["entities"]

    def flaky(doc):
        if doc["id"] == "b-1":
            raise StoreUnavailable("model store unreachable")  # any Transient
        return entities(doc)

    monkeypatch.setitem(env.resources.pipeline.stages, "entities", flaky)
    task = FakeBatchTask()
    tasks._run_batch(task, articles)
    assert _stored(env) == ["b-0", "b-2"]
    (handed,) = task.handed
    assert handed["name"] == ARTICLE_TASK and handed["kwargs"] == {"start": "entities"}
    assert (handed["countdown"], handed["retries"], handed["queue"]) == (2, 1, "the-queue")
    assert handed["parent_id"] == "batch-1"
    (doc,) = handed["args"]
    assert doc["id"] == "b-1" and doc["language"]["code"] == "en" and "text" in doc
    assert "entities" not in doc  # the stage that failed has not run on it
    retried = [e for e in env.sent[0] if e["type"] == "task-retried"]
    assert [(e["name"], e["args"]) for e in retried] == [("enrich.entities", "({'id': 'b-1'},)")]


def test_the_batch_dedupe_is_one_index_call_deciding_in_order(env, seed_text, monkeypatch):
    """One index call for the whole batch; an exact copy later in the batch is decided a
    duplicate of the earlier article, as one by one."""
    articles = _articles(3, seed_text)
    articles[2] = {**articles[0], "id": "b-copy"}
    index = env.resources.dedupe_index
    calls = []
    many = index.check_and_insert_many
    monkeypatch.setattr(index, "check_and_insert_many",
                        lambda items: (calls.append(len(items)), many(items))[1])
    tasks._run_batch(FakeBatchTask(), articles)
    assert calls == [3]
    assert env.resources.store.get("b-copy")["dedupe"]["duplicate_of"] == "b-0"
    assert env.resources.store.get("b-1")["dedupe"]["duplicate_of"] is None


def test_an_unreachable_index_hands_every_article_on_from_dedupe(env, seed_text, monkeypatch):
    """Redis down at the batch's index call: each article retries alone from dedupe, with
    its document so far."""
    def down(items):
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(env.resources.dedupe_index, "check_and_insert_many", down)
    task = FakeBatchTask()
    tasks._run_batch(task, _articles(3, seed_text))
    assert _stored(env) == []
    assert [(h["args"][0]["id"], h["kwargs"], h["countdown"], h["retries"])
            for h in task.handed] == [(f"b-{n}", {"start": "dedupe"}, 2, 1) for n in range(3)]
    assert all("entities" in h["args"][0] for h in task.handed)


def test_a_failed_batch_write_hands_every_article_on_from_the_store(env, seed_text,
                                                                    monkeypatch):
    """PostgreSQL down at the batch's write: each article retries alone from the store."""
    def down(docs):
        raise StoreUnavailable("PostgreSQL unavailable: connection refused")

    monkeypatch.setattr(env.resources.store, "upsert_many", down)
    task = FakeBatchTask()
    tasks._run_batch(task, _articles(3, seed_text))
    assert _stored(env) == []
    assert [(h["args"][0]["id"], h["kwargs"], h["countdown"]) for h in task.handed] == \
        [(f"b-{n}", {"start": "store"}, 2) for n in range(3)]


def test_a_batch_delivered_again_is_split_into_one_message_per_article(env, seed_text):
    """A second delivery (the first one's worker died: perhaps a poison article) runs
    nothing: every article goes on as its own message, from the start; no stage events,
    only the batch's own."""
    articles = _articles(3, seed_text)
    task = FakeBatchTask(task_id="batch-again")
    key = tasks.delivery_key(env.settings.key_prefix, "batch-again", 0)
    env.resources.broker_redis.set(key, 1)  # the first delivery was counted
    tasks._run_batch(task, articles)
    assert _stored(env) == []
    assert [[(e["uuid"], e["type"]) for e in events] for events in env.sent] == \
        [[("batch-again", "task-succeeded")]]
    assert [(h["name"], h["args"], h["kwargs"], h["countdown"], h["retries"])
            for h in task.handed] == [(ARTICLE_TASK, (a,), {}, None, 0) for a in articles]


def test_a_batch_sends_no_task_events_from_the_main_process_unless_it_fails():
    """The worker's main process sends a batch's failure, requeue and revocation events,
    not its received/started/succeeded ones (the batch's child sends its success)."""
    assert tasks.batch.send_events is False and tasks.batch.Request is tasks.BatchRequest
    sent = []
    eventer = SimpleNamespace(enabled=True, send=lambda type, **f: sent.append((type, f)))
    request = SimpleNamespace(id="batch-9", _eventer=eventer)
    for kind in ("task-received", "task-started", "task-succeeded", "task-failed",
                 "task-rejected", "task-revoked"):
        tasks.BatchRequest.send_event(request, kind, exception="WorkerLostError()")
    assert [(kind, f["uuid"]) for kind, f in sent] == \
        [("task-failed", "batch-9"), ("task-rejected", "batch-9"), ("task-revoked", "batch-9")]


def test_a_hand_off_that_cannot_be_published_requeues_the_whole_batch(env, seed_text,
                                                                      monkeypatch):
    """When the broker will not take the hand-off, the batch message is rejected with
    requeue (Celery puts it back) instead of acknowledged without that article."""
    monkeypatch.setattr(tasks, "UNPUBLISHED_RETRY_DELAY", 0)
    task = FakeBatchTask(task_id="batch-x", fail_publish=True)
    env.resources.broker_redis.set(tasks.delivery_key(env.settings.key_prefix, "batch-x", 0), 1)
    with pytest.raises(CeleryReject) as raised:
        tasks._run_batch(task, _articles(2, seed_text))
    assert raised.value.requeue is True


# --- the producer's grouping ---------------------------------------------------------------
def test_articles_at_hand_go_in_full_groups_and_the_rest_in_one_more():
    """20 items at hand, size 8: 8, 8 and 4, in order."""
    groups = list(gathered(range(20), 8, linger=1.0))
    assert [len(g) for g in groups] == [8, 8, 4]
    assert [x for g in groups for x in g] == list(range(20))


def test_a_slow_source_never_keeps_an_article_waiting_for_company():
    """Items 50 ms apart with a 5 ms linger each go alone, each soon after it arrived."""
    arrived: dict[int, float] = {}

    def slow():
        for n in range(4):
            time.sleep(0.05)
            arrived[n] = time.monotonic()
            yield n

    handed = [(group, time.monotonic()) for group in gathered(slow(), 8, linger=0.005)]
    assert [group for group, _ in handed] == [[0], [1], [2], [3]]
    assert all(at - arrived[group[0]] < 0.04 for group, at in handed)


def test_an_error_of_the_source_comes_after_the_items_before_it():
    """A source that fails mid-way: the items read so far are handed on, then the error."""
    def failing():
        yield from (1, 2, 3)
        raise OSError("disk gone")

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for group in gathered(failing(), 8, linger=0.5):
            seen.extend(group)
    assert seen == [1, 2, 3]


def test_the_reader_stops_when_the_consumer_gives_up():
    """Leaving the loop early (a publish failed) stops the reading thread."""
    groups = gathered(iter(range(10_000)), 4, linger=0.5)
    next(groups)
    groups.close()
    deadline = time.monotonic() + 5
    while any(t.name == "publish-reader" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the publish-reader thread is still running"
        time.sleep(0.05)
