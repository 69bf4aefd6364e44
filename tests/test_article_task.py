"""The article task's policy (worker/tasks.py): one message runs every stage; a failure names
its stage, a retry resumes there, and every stage is reported as a task event of its own.

Stage work is replaced by a recorder (the stages have their own tests); dead letters and
delivery counts go to the real Redis."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery.exceptions import Ignore, Retry
from kombu.clocks import LamportClock

from worker import tasks
from worker.app import CHAIN
from worker.errors import IndexUnavailable, Reject


@pytest.fixture
def env(settings_for, task_env):
    return task_env(settings_for())


class FakeTask:
    """What the policy reads of a bound Celery task; retry() records its arguments."""

    name = "enrich.article"

    def __init__(self, task_id: str = "t-1", retries: int = 0) -> None:
        self.app = SimpleNamespace(clock=LamportClock(),
                                   conf=SimpleNamespace(worker_send_task_events=True))
        self.request = SimpleNamespace(id=task_id, retries=retries, root_id=None,
                                       hostname="test@host")
        self.retried: dict | None = None

    def retry(self, **options):
        self.retried = options
        return Retry()


def recorder(monkeypatch, fail_at: str | None = None, error: Exception | None = None):
    """_execute replaced: each stage appends its name to doc["ran"]; `fail_at` raises."""
    calls = []

    def execute(stage, doc):
        calls.append(stage)
        if stage == fail_at:
            raise error
        return {**doc, "ran": [*doc.get("ran", []), stage]}

    monkeypatch.setattr(tasks, "_execute", execute)
    return calls


def test_one_message_runs_every_stage_in_order_and_reports_each_as_a_task(env, monkeypatch):
    """All five stages run once; five stage events named enrich.<stage>, children of the task."""
    calls = recorder(monkeypatch)
    assert tasks._run(FakeTask(), {"id": "a1", "text": "x"}, "clean") is None
    assert calls == list(CHAIN)
    (events,) = env.sent
    assert [e["name"] for e in events] == [f"enrich.{s}" for s in CHAIN]
    assert {e["type"] for e in events} == {"task-succeeded"}
    assert {e["parent_id"] for e in events} == {"t-1"} == {e["root_id"] for e in events}
    assert len({e["uuid"] for e in events}) == len(CHAIN)
    assert all(e["args"] == "({'id': 'a1'},)" for e in events)  # the id, never the text
    assert all(e["runtime"] >= 0 and e["started"] <= e["timestamp"] for e in events)


def test_transient_failure_retries_from_that_stage_with_the_document_so_far(env, monkeypatch):
    """Redis down at dedupe: retry carries the document before dedupe and start=dedupe."""
    calls = recorder(monkeypatch, "dedupe", IndexUnavailable("Redis unavailable: gone"))
    task = FakeTask()
    with pytest.raises(Retry):
        tasks._run(task, {"id": "a2", "text": "x"}, "clean")
    assert calls == ["clean", "language", "entities", "dedupe"]
    assert task.retried["kwargs"] == {"start": "dedupe"}
    (doc,) = task.retried["args"]
    assert doc["ran"] == ["clean", "language", "entities"]
    assert [e["type"] for e in env.sent[0]][-1] == "task-retried"
    # The retry message runs only what is left.
    calls.clear()
    recorder(monkeypatch)
    assert tasks._run(FakeTask(retries=1), doc, "dedupe") is None
    assert env.sent[-1][0]["name"] == "enrich.dedupe" and len(env.sent[-1]) == 2


def test_reject_dead_letters_the_failing_stage_and_its_input(env, monkeypatch):
    """A Reject at entities: dead letter with stage entities and the document it was given;
    the later stages never run; the stage shows as failed."""
    calls = recorder(monkeypatch, "entities", Reject("no good", reason="invalid_article"))
    with pytest.raises(Ignore):
        tasks._run(FakeTask(), {"id": "a3", "text": "x"}, "clean")
    assert calls == ["clean", "language", "entities"]
    (entry,) = env.resources.dead_letters.list()
    assert (entry["task"], entry["stage"], entry["reason"]) == (
        "enrich.article", "entities", "invalid_article")
    assert entry["payload"]["ran"] == ["clean", "language"]
    assert [e["type"] for e in env.sent[0]] == ["task-succeeded"] * 2 + ["task-failed"]


def test_a_bug_in_a_stage_is_dead_lettered_as_internal_with_its_stage(env, monkeypatch):
    """Any other exception: reason internal, the stage named, the worker's task acked."""
    recorder(monkeypatch, "language", KeyError("oops"))
    with pytest.raises(Ignore):
        tasks._run(FakeTask(), {"id": "a4", "text": "x"}, "clean")
    (entry,) = env.resources.dead_letters.list()
    assert (entry["stage"], entry["reason"]) == ("language", "internal")
    assert "KeyError" in entry["error"]


def test_unknown_start_stage_is_dead_lettered_not_run(env, monkeypatch):
    """A message from another producer with start=bogus runs nothing and is kept."""
    calls = recorder(monkeypatch)
    with pytest.raises(Ignore):
        tasks._run(FakeTask(), {"id": "a5", "text": "x"}, "bogus")
    assert calls == []
    (entry,) = env.resources.dead_letters.list()
    assert entry["reason"] == "invalid_article" and "bogus" in entry["error"]


def test_transient_failure_with_retries_spent_is_dead_lettered_at_its_stage(env, monkeypatch):
    """The last retry failing: a dead letter (stage dedupe, its input), one failed event."""
    recorder(monkeypatch, "dedupe", IndexUnavailable("Redis unavailable: gone"))
    task = FakeTask(retries=env.settings.max_retries)
    with pytest.raises(Ignore):
        tasks._run(task, {"id": "a6", "text": "x", "ran": ["clean", "language", "entities"]},
                   "dedupe")
    assert task.retried is None
    (entry,) = env.resources.dead_letters.list()
    assert (entry["stage"], entry["reason"]) == ("dedupe", "index_unavailable")
    assert "gave up after" in entry["error"]
    assert [e["type"] for e in env.sent[0]] == ["task-failed"]


def test_a_retry_that_cannot_be_published_is_retried_in_the_process(env, monkeypatch):
    """Redis down at dedupe and the retry's publish failing too (right after a Redis
    restart): the stage is run again here, and the article goes on; no dead letter."""
    from celery.exceptions import Reject as NotPublished

    monkeypatch.setattr(tasks, "UNPUBLISHED_RETRY_DELAY", 0)
    calls = []

    def execute(stage, doc):
        calls.append(stage)
        if stage == "dedupe" and calls.count("dedupe") == 1:
            raise IndexUnavailable("Redis unavailable: restarting")
        return {**doc, "ran": [*doc.get("ran", []), stage]}

    monkeypatch.setattr(tasks, "_execute", execute)
    task = FakeTask()

    def retry(**options):
        raise NotPublished(AttributeError("'NoneType' object has no attribute 'client'"))

    task.retry = retry
    assert tasks._run(task, {"id": "a7", "text": "x"}, "clean") is None
    assert calls == ["clean", "language", "entities", "dedupe", "dedupe", "store"]
    assert env.resources.dead_letters.count() == 0
