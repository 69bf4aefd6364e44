"""Delivery through the hardened transport (worker/transport.py): nothing is ever out of
Redis between pop and acknowledgement, and leases decide redelivery.

Unit tests drive a kombu consumer on the real Redis; the process tests run real Celery
workers of a tiny app defined here (`celery -A tests.test_transport`) with the project's
broker configuration (worker.app.celery_config), so they do not depend on worker/tasks.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection, Consumer, Exchange, Producer, Queue

from tests.workers import settings_env, wait_until
from worker.faults.harness import kill_group
from worker.app import celery_config
from worker.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent

# --- the tiny app the worker processes run ----------------------------------------------
# Configured lazily (on first use of app.conf), so importing this module under pytest reads
# no settings; the worker process reads its ENRICH_* environment.
app = Celery("transport-test")
app.add_defaults(lambda: celery_config(get_settings()))


@app.task(name="transport_test.hold", bind=True)
def hold(self, seconds: float, key: str) -> None:
    """Records each execution (worker, time) in the Redis list `key`, then sleeps."""
    client = redis.Redis.from_url(get_settings().broker_url)
    client.rpush(key, json.dumps({"worker": self.request.hostname, "at": time.time()}))
    time.sleep(seconds)
    client.rpush(key, json.dumps({"worker": self.request.hostname, "done": time.time()}))


# --- helpers ------------------------------------------------------------------------------
OPTIONS = {"visibility_timeout": 5, "unacked_restore_throttle": 1, "priority_steps": [0],
           "lease_interval": 1}


@pytest.fixture
def client(redis_client):
    return redis_client


@pytest.fixture
def queue_name(client):
    name = f"transport-{uuid.uuid4().hex[:10]}"
    yield name
    forget_queue(client, name)


def forget_queue(client: redis.Redis, queue: str) -> None:
    """Delete a test queue and the unacknowledged messages of it that workers left behind."""
    client.delete(queue)
    for tag, raw in client.hscan_iter("unacked"):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, TypeError, IndexError):
            continue
        if routing_key == queue:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)


def connect(redis_url: str, **options) -> Connection:
    return Connection(redis_url, transport="worker.transport:Transport",
                      transport_options={**OPTIONS, **options})


def publish_one(conn: Connection, queue: str, body: dict) -> Queue:
    q = Queue(queue, Exchange(queue), routing_key=queue)
    Producer(conn.default_channel).publish(body, exchange=q.exchange, routing_key=queue,
                                           declare=[q], serializer="json")
    return q


def receive_one(conn: Connection, q: Queue):
    received = []
    with Consumer(conn.default_channel, [q], callbacks=[lambda _b, m: received.append(m)],
                  accept=["json"]):
        conn.drain_events(timeout=5)
    (message,) = received
    return message


def sweep(channel) -> None:
    """One sweep now (the transport's throttle would otherwise skip a second one)."""
    channel.qos._last_sweep = None
    channel.qos.restore_visible(num=None)


def pending_lists(channel) -> list[str]:
    return list(channel._pending)


# --- unit: the atomic pop --------------------------------------------------------------------
def test_a_delivered_message_is_recorded_unacked_and_out_of_the_pending_list(
    redis_url, client, queue_name
):
    """On receipt the message is in `unacked` (hash and index) and nowhere else; the ack
    removes it from both."""
    with connect(redis_url) as conn:
        message = receive_one(conn, publish_one(conn, queue_name, {"n": 1}))
        channel = conn.default_channel
        tag = message.delivery_tag
        assert client.hget("unacked", tag) is not None
        assert client.zscore("unacked_index", tag) is not None
        assert pending_lists(channel)
        assert all(client.llen(key) == 0 for key in pending_lists(channel))
        assert client.llen(queue_name) == 0
        message.ack()
        assert client.hget("unacked", tag) is None
        assert client.zscore("unacked_index", tag) is None


def test_the_unacked_record_holds_the_envelope_exactly_as_it_was_on_the_queue(
    redis_url, client, queue_name
):
    """The record kombu restores from is [envelope, exchange, routing key], the envelope the
    bytes that were popped (not a re-encoding); a sweep puts back the same message."""
    with connect(redis_url) as conn, connect(redis_url) as other:
        q = publish_one(conn, queue_name, {"text": "Zürich – Київ", "n": 2})
        # Compact JSON, unlike kombu's own encoding: a re-encoded record would differ.
        on_queue = json.dumps(json.loads(client.rpop(queue_name)), separators=(",", ":"),
                              ensure_ascii=False).encode()
        client.rpush(queue_name, on_queue)
        message = receive_one(conn, q)
        record = client.hget("unacked", message.delivery_tag)
        assert record.startswith(b"[" + on_queue + b",")
        assert json.loads(record) == [json.loads(on_queue), queue_name, queue_name]
        long_ago = time.time() - 10 * OPTIONS["visibility_timeout"]
        client.zadd("unacked_index", {message.delivery_tag: long_ago})  # not renewed
        sweep(other.default_channel)
        (restored,) = client.lrange(queue_name, 0, -1)
        assert json.loads(restored)["body"] == json.loads(on_queue)["body"]
        assert json.loads(restored)["properties"]["delivery_tag"] == message.delivery_tag


def test_a_message_taken_but_never_recorded_goes_back_when_its_consumer_is_gone(
    redis_url, client, queue_name, monkeypatch
):
    """The loss window of kombu's BRPOP: popped, then the consumer dies before recording it.
    Here it waits in the consumer's pending list; once the lease lapses a sweep requeues it."""
    from worker import transport

    def die(*_args, **_kwargs):
        raise SystemExit("killed between pop and record")

    with connect(redis_url) as conn:
        q = publish_one(conn, queue_name, {"n": 2})
        monkeypatch.setattr(transport.QoS, "append", die)
        with pytest.raises(SystemExit):
            receive_one(conn, q)
        monkeypatch.undo()
        (pending,) = pending_lists(conn.default_channel)
    assert client.llen(queue_name) == 0 and client.llen(pending) == 1
    with connect(redis_url) as other:
        sweep(other.default_channel)
        assert client.llen(pending) == 1, "swept while its consumer's lease was alive"
        client.delete(f"{pending}:lease")  # the lease lapses: no consumer renews it
        sweep(other.default_channel)
        assert client.llen(pending) == 0
        assert client.hget("unacked_pending", pending) is None
        assert receive_one(other, q).payload == {"n": 2}


def test_a_live_consumer_whose_delivery_failed_puts_the_message_back_itself(
    redis_url, client, queue_name, monkeypatch
):
    """A delivery that raised (say Redis refused the record) leaves the message in the
    pending list of a consumer that lives on and renews it: it requeues it before its
    next pop."""
    from worker import transport

    def refused(*_args, **_kwargs):
        raise redis.ResponseError("OOM command not allowed")

    with connect(redis_url) as conn:
        q = publish_one(conn, queue_name, {"n": 3})
        monkeypatch.setattr(transport.QoS, "append", refused)
        with pytest.raises(redis.ResponseError):
            receive_one(conn, q)
        monkeypatch.undo()
        message = receive_one(conn, q)
        assert message.payload == {"n": 3}
        message.ack()
        assert all(client.llen(key) == 0 for key in pending_lists(conn.default_channel))


def test_garbage_popped_is_dead_lettered_and_not_left_in_the_pending_list(
    redis_url, client, queue_name, settings_for, monkeypatch
):
    """A non-message on the queue goes to the dead letters, and only there."""
    settings = settings_for(broker_url=redis_url)
    monkeypatch.setattr("worker.transport.get_settings", lambda: settings)
    with connect(redis_url) as conn:
        q = publish_one(conn, queue_name, {"n": 4})
        client.rpush(queue_name, b"not json")  # taken first (the head of the queue)
        message = receive_one(conn, q)
        message.ack()
        assert all(client.llen(key) == 0 for key in pending_lists(conn.default_channel))
    try:
        (entry,) = [json.loads(e) for e in client.lrange(settings.dead_letter_key, 0, -1)]
        assert entry["reason"] == "malformed_message"
        assert entry["payload_truncated"] == "not json"
    finally:
        client.delete(settings.dead_letter_key)


# --- unit: leases ---------------------------------------------------------------------------
def test_a_held_message_is_restored_only_once_its_consumer_stops_renewing(
    redis_url, client, queue_name
):
    """A message held longer than the visibility timeout stays with its consumer while the
    consumer renews its lease; when the renewals stop, the sweep requeues it."""
    with connect(redis_url) as conn, connect(redis_url) as other:
        channel = conn.default_channel
        message = receive_one(conn, publish_one(conn, queue_name, {"n": 5}))
        tag = message.delivery_tag
        long_ago = time.time() - 10 * OPTIONS["visibility_timeout"]
        client.zadd("unacked_index", {tag: long_ago})  # held for ten visibility timeouts
        channel._lease_due = 0.0  # the renewal timer fires
        channel.refresh_leases()
        assert client.zscore("unacked_index", tag) > long_ago
        sweep(other.default_channel)
        assert client.llen(queue_name) == 0 and client.hget("unacked", tag) is not None
        client.zadd("unacked_index", {tag: long_ago})  # ...and then no more renewals
        sweep(other.default_channel)
        assert client.llen(queue_name) == 1 and client.hget("unacked", tag) is None
        message.ack()  # late: the requeued copy stays, to run again


def test_a_renewal_never_brings_back_an_acknowledged_message(redis_url, client, queue_name):
    """Renewing only touches tags still in the index (ZADD XX)."""
    with connect(redis_url) as conn:
        channel = conn.default_channel
        message = receive_one(conn, publish_one(conn, queue_name, {"n": 6}))
        client.zrem("unacked_index", message.delivery_tag)  # acked by a racing path
        channel._lease_due = 0.0
        channel.refresh_leases()
        assert client.zscore("unacked_index", message.delivery_tag) is None
        message.ack()


# --- real workers -----------------------------------------------------------------------------
def start_celery_worker(settings, log: Path, name: str) -> subprocess.Popen:
    """A real prefork Celery worker of this module's app, in its own process group."""
    env = settings_env(settings, PYTHONPATH=str(ROOT), ENRICH_METRICS_PORT="0")
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.test_transport", "worker",
             "--concurrency", "1", "--hostname", f"{name}@%h", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True)


def executions(client: redis.Redis, key: str) -> list[dict]:
    return [json.loads(e) for e in client.lrange(key, 0, -1)]


def sender(settings) -> Celery:
    producer = Celery("transport-test-producer")
    producer.conf.update(celery_config(settings))
    return producer


def wait_ready(*logs: Path) -> None:
    for log in logs:
        wait_until(lambda log=log: log.exists() and " ready." in log.read_text(), 60,
                   what=f"worker ready (log {log})")


@pytest.mark.slow
@pytest.mark.integration
def test_task_of_a_sigkilled_worker_runs_on_the_other_worker(
    tmp_path, settings_for, redis_url, client
):
    """Two workers; the one running a task is SIGKILLed with its whole process group: the
    other one runs the task (default visibility timeout and sweep; seconds printed)."""
    settings = settings_for(broker_url=redis_url)
    key = f"{settings.key_prefix}executions"
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
    workers = {name: start_celery_worker(settings, log, name) for name, log in logs.items()}
    try:
        wait_ready(*logs.values())
        sender(settings).send_task("transport_test.hold", args=(120, key))
        first = wait_until(lambda: executions(client, key), 30, what="the task to start")[0]
        victim = first["worker"].split("@")[0]
        killed_at = time.time()
        kill_group(workers[victim])
        again = wait_until(lambda: executions(client, key)[1:], 90,
                           what=f"the task to run again (logs {list(logs.values())})")[0]
        print(f"\nwhole worker SIGKILLed: task running again on the other worker after "
              f"{again['at'] - killed_at:.1f} s (visibility timeout "
              f"{settings.visibility_timeout} s, sweep every "
              f"{settings.unacked_restore_throttle} s)")
        assert again["worker"] != first["worker"]
    finally:
        for worker in workers.values():
            kill_group(worker)
        forget_queue(client, settings.queue)
        client.delete(key)


@pytest.mark.slow
@pytest.mark.integration
def test_live_workers_hold_messages_past_the_visibility_timeout_without_redelivery(
    tmp_path, settings_for, redis_url, client
):
    """A task that runs for four visibility timeouts, then one whose retry-style countdown
    is four visibility timeouts (held unacknowledged by the worker meanwhile): each runs
    once, while the other worker, idle, sweeps."""
    visibility = 5
    settings = settings_for(broker_url=redis_url, visibility_timeout=visibility,
                            unacked_restore_throttle=1)
    long_key, later_key = f"{settings.key_prefix}long", f"{settings.key_prefix}later"
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
    workers = {name: start_celery_worker(settings, log, name) for name, log in logs.items()}
    try:
        wait_ready(*logs.values())
        producer = sender(settings)
        for key, sleep, countdown in ((long_key, 4 * visibility, None),
                                      (later_key, 0, 4 * visibility)):
            producer.send_task("transport_test.hold", args=(sleep, key), countdown=countdown)
            wait_until(lambda key=key: any("done" in e for e in executions(client, key)), 60,
                       what=f"{key} to finish (logs {list(logs.values())})")
            time.sleep(2)  # a second copy would have run on an idle worker long before this
            starts = [e for e in executions(client, key) if "at" in e]
            assert len(starts) == 1, (key, starts)
    finally:
        for worker in workers.values():
            kill_group(worker)
        forget_queue(client, settings.queue)
        client.delete(long_key, later_key)
