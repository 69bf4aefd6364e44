"""Poison messages and redelivery: Redis keeps no delivery count, so worker/tasks.py does.

A message that kills its pool process (or hangs it past the hard time limit) is requeued by
Celery (task_reject_on_worker_lost / task_acks_on_failure_or_timeout=False) and counted
per (task id, retry number); past ENRICH_MAX_DELIVERIES it is dead-lettered as
`too_many_deliveries` instead of run again. Real workers, fault injection through the
test-only ENRICH_TEST_KILL_* variables (worker/tasks.py).
"""

from __future__ import annotations

import statistics
from types import SimpleNamespace

import pytest
import redis
from celery.exceptions import Ignore
from kombu.clocks import LamportClock

from worker import tasks
from worker.app import celery_config
from worker.deadletter import DeadLetters
from worker.faults.harness import (event_time, log_events, start_worker, stop_worker,
                                   wait_until)
from worker.producer import publish
from worker.resources import Resources
from worker.store import open_store

FAULT_EVENT = "TEST FAULT: harming this process"

TOPICS = [
    "The harbour authority approved a new ferry timetable after months of complaints from "
    "island residents about cancelled crossings and long queues at the terminal.",
    "A regional hospital opened a second maternity ward, funded by a charity appeal that "
    "raised more than two million pounds from local businesses and families.",
    "Farmers in the valley reported the wettest spring in forty years, with flooded fields "
    "delaying the planting of barley and potatoes by several weeks.",
    "The city museum returned a collection of carved masks to the community they were taken "
    "from, after a long campaign by historians and tribal elders.",
]


def article(article_id: str, topic: int) -> dict:
    return {"id": article_id, "title": f"Story {article_id}", "text": TOPICS[topic]}


@pytest.fixture
def broker(redis_client):
    return redis_client


def fault_events(log, article_id: str) -> list[dict]:
    return [e for e in log_events(log)
            if e.get("event") == FAULT_EVENT and e.get("article_id") == article_id]


# --- unit: the counter and the policy in _run -----------------------------------------------
@pytest.fixture
def task_env(settings_for, monkeypatch):
    """worker.tasks wired to this test's settings and resources (real Redis db 15)."""
    settings = settings_for(max_deliveries=3)
    resources = Resources(settings)
    client = resources.broker_redis
    monkeypatch.setattr(tasks, "get_settings", lambda: settings)
    monkeypatch.setattr(tasks, "get_resources", lambda: resources)
    yield settings, resources
    client.delete(settings.dead_letter_key, *(
        tasks.delivery_key(settings.key_prefix, task_id, retries)
        for task_id in ("task-1", "task-2") for retries in (0, 1)))


def fake_task(task_id: str = "task-1", retries: int = 0, name: str = "enrich.article"):
    """Just what the delivery counter and the stage loop read of a Celery task (no events)."""
    app = SimpleNamespace(clock=LamportClock(),
                          conf=SimpleNamespace(worker_send_task_events=False))
    request = SimpleNamespace(id=task_id, retries=retries, root_id=None, hostname="test@host")
    return SimpleNamespace(name=name, app=app, request=request)


def test_deliveries_counted_per_task_and_retry_with_a_ttl(task_env):
    settings, resources = task_env
    assert [tasks._count_delivery(fake_task()) for _ in range(3)] == [1, 2, 3]
    assert tasks._count_delivery(fake_task(retries=1)) == 1  # a retry is a new message
    assert tasks._count_delivery(fake_task("task-2")) == 1
    key = tasks.delivery_key(settings.key_prefix, "task-1", 0)
    assert key.startswith(settings.key_prefix)
    ttl = resources.broker_redis.ttl(key)
    # A message hung to the hard time limit comes back after its lease lapses: still counted.
    assert settings.task_time_limit + settings.visibility_timeout < ttl <= tasks.delivery_ttl(
        settings)


def test_message_over_the_limit_is_dead_lettered_without_running(task_env, monkeypatch):
    settings, resources = task_env
    resources.broker_redis.set(tasks.delivery_key(settings.key_prefix, "task-1", 0), 3)
    monkeypatch.setattr(tasks, "_execute", lambda *a: pytest.fail("a poison message ran"))
    payload = {"id": "p1", "text": "x"}
    with pytest.raises(Ignore):
        tasks._run(fake_task(), payload, "clean")
    (entry,) = resources.dead_letters.list()
    assert entry["reason"] == "too_many_deliveries"
    assert entry["deliveries"] == 4 and entry["id"] == "p1" and entry["payload"] == payload
    assert "ENRICH_MAX_DELIVERIES=3" in entry["error"]


def test_message_at_the_limit_still_runs(task_env, monkeypatch):
    settings, resources = task_env
    resources.broker_redis.set(tasks.delivery_key(settings.key_prefix, "task-1", 0), 2)
    ran = []
    monkeypatch.setattr(tasks, "_execute", lambda stage, doc: ran.append(stage) or doc)
    assert tasks._run(fake_task(), {"id": "p1"}, "clean") is None
    assert ran == ["clean", "language", "entities", "dedupe", "store"]
    assert resources.dead_letters.count() == 0


def test_uncountable_delivery_runs_anyway(task_env, monkeypatch):
    """Redis not answering the counter is a broker outage, not a poison message."""
    _, resources = task_env
    resources.__dict__["broker_redis"] = redis.Redis(port=1, socket_connect_timeout=0.2)
    assert tasks._count_delivery(fake_task()) is None


def test_fault_injection_is_off_unless_asked():
    assert tasks._TestFault.from_env({}) is None
    fault = tasks._TestFault.from_env({"ENRICH_TEST_KILL_ON": "a, b",
                                       "ENRICH_TEST_KILL_TIMES": "1"})
    assert fault.ids == {"a", "b"} and fault.times == 1 and fault.how == "process"


def test_delivery_config_requeues_lost_and_hung_tasks(settings_for):
    config = celery_config(settings_for(task_time_limit=150, unacked_restore_throttle=5))
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["task_time_limit"] == 150
    assert config["task_acks_on_failure_or_timeout"] is False  # a hung task is requeued
    assert config["broker_transport_options"]["unacked_restore_throttle"] == 5
    assert config["broker_transport"] == "worker.transport:Transport"


# --- real workers ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.integration
def test_article_that_kills_its_process_is_dead_lettered_after_max_deliveries(
    tmp_path, settings_for, broker
):
    """SIGKILL of the pool process on one article: requeued at once, counted, dead-lettered
    on delivery 4 (ENRICH_MAX_DELIVERIES=3); the others are stored once; the worker lives."""
    settings = settings_for(max_deliveries=3)
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log, env={"ENRICH_TEST_KILL_ON": "poison"})
    store = open_store(settings.store_url)
    dead = DeadLetters(broker, settings.dead_letter_key)
    try:
        # Alone first, so the gaps below are redelivery and not the queue behind it (a
        # requeued message goes to the back of the queue).
        publish([article("poison", 1)], settings=settings)
        wait_until(lambda: dead.count() == 1, 90, what=f"the poison dead-lettered (log {log})")
        publish([article("fine-1", 0), article("fine-2", 2)], settings=settings)
        wait_until(lambda: store.count() == 2, 90, what=f"the others stored (log {log})")
        (entry,) = dead.list()
        assert entry["reason"] == "too_many_deliveries"
        assert entry["id"] == "poison" and entry["task"] == "enrich.article"
        assert entry["stage"] == "clean"  # the message's start: replay runs every stage
        assert entry["deliveries"] == 4
        assert entry["payload"]["text"] == TOPICS[1]
        assert store.get("poison") is None
        assert store.writes("fine-1") == 1 and store.writes("fine-2") == 1
        kills = fault_events(log, "poison")
        assert [e["deliveries"] for e in kills] == [1, 2, 3]
        gaps = [event_time(b) - event_time(a) for a, b in zip(kills, kills[1:], strict=False)]
        print(f"\nredelivery after the pool process was SIGKILLed: "
              f"{', '.join(f'{g:.2f}' for g in gaps)} s (median {statistics.median(gaps):.2f})")
        assert max(gaps) < 30, "a killed task must come back quickly, not after the timeout"
        assert worker.poll() is None, "the worker must survive a poison message"
    finally:
        stop_worker(worker)
        store.close()


@pytest.mark.slow
@pytest.mark.integration
def test_hung_task_is_killed_by_the_time_limit_and_dead_lettered(tmp_path, settings_for, broker):
    """A task that hangs is killed at the hard time limit and requeued (not acked and lost);
    after ENRICH_MAX_DELIVERIES it is dead-lettered."""
    # A tight limit for the test; no other article here: a fresh pool process loading spaCy
    # can itself take seconds on a busy machine (the default limit is 150 s).
    settings = settings_for(max_deliveries=2, task_time_limit=3)
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log, env={"ENRICH_TEST_KILL_ON": "hangs",
                                              "ENRICH_TEST_KILL_HOW": "hang",
                                              "ENRICH_TEST_KILL_STAGE": "language"})
    dead = DeadLetters(broker, settings.dead_letter_key)
    try:
        publish([article("hangs", 3)], settings=settings)
        wait_until(lambda: dead.count() == 1, 90,
                   what=f"the hung article dead-lettered (log {log})")
        (entry,) = dead.list()
        assert (entry["id"], entry["task"], entry["stage"], entry["reason"],
                entry["deliveries"]) == ("hangs", "enrich.article", "clean",
                                         "too_many_deliveries", 3)
        assert entry["payload"]["text"] == TOPICS[3]  # the message's raw article: replayable
        assert len(fault_events(log, "hangs")) == 2
        assert any("Hard time limit (3s) exceeded" in e.get("event", "")
                   for e in log_events(log))
        assert worker.poll() is None
    finally:
        stop_worker(worker)


@pytest.mark.slow
@pytest.mark.integration
def test_task_of_a_lost_worker_comes_back_after_the_visibility_timeout(
    tmp_path, settings_for, broker
):
    """The whole worker is SIGKILLed after the store committed, before the ack: another
    worker's sweep requeues the message once its lease lapses (the last renewal, every fifth
    of the visibility timeout, plus the timeout); the article is stored once (one row, two
    executions)."""
    visibility, throttle = 8, 1
    settings = settings_for(visibility_timeout=visibility, unacked_restore_throttle=throttle)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    worker_a = start_worker(settings, log_a, hostname="a@%h", env={
        "ENRICH_TEST_KILL_ON": "lost", "ENRICH_TEST_KILL_STAGE": "store",
        "ENRICH_TEST_KILL_WHEN": "after", "ENRICH_TEST_KILL_HOW": "worker"})
    worker_b = None
    store = open_store(settings.store_url)
    try:
        # Warm worker A up first: a cold pool process loading its models can outlive this
        # short visibility timeout, and Redis would then hand the task out twice (seen).
        publish([article("warm-up", 0)], settings=settings)
        wait_until(lambda: store.get("warm-up"), 90, what=f"the warm-up stored (log {log_a})")
        publish([article("lost", 2)], settings=settings)
        wait_until(lambda: worker_a.poll() is not None, 90, what=f"worker A to die (log {log_a})")
        (kill,) = fault_events(log_a, "lost")
        assert store.writes("lost") == 1  # committed before the kill
        worker_b = start_worker(settings, log_b, hostname="b@%h")
        wait_until(lambda: store.writes("lost") == 2, 60,
                   what=f"the store task redelivered to worker B (log {log_b})")
        (again,) = [e for e in log_events(log_b)
                    if e.get("event") == "article enriched" and e.get("article_id") == "lost"]
        recovery = event_time(again) - event_time(kill)
        print(f"\nwhole worker SIGKILLed: task back after {recovery:.1f} s "
              f"(visibility timeout {visibility} s, sweep every {throttle} s)")
        assert recovery >= visibility - visibility / 5 - 1
        assert recovery < visibility + throttle + 20
        # (the warm-up may have run twice: its cold model load can outlive 8 s on a busy box)
        assert store.count() == 2
        assert DeadLetters(broker, settings.dead_letter_key).count() == 0
    finally:
        for worker in (worker_a, worker_b):
            if worker is not None:
                stop_worker(worker)
        store.close()
