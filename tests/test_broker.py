"""Queue depth counts one queue's waiting and reserved messages, not its neighbours'."""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from worker.broker import UNACKED, queue_depth, reserved, waiting


@pytest.fixture
def quiet_db(redis_url):
    """Redis db 13: no worker of any test uses it, so kombu's shared `unacked` hash is ours."""
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/13")
    client.delete(UNACKED)
    yield client
    client.delete(UNACKED)


def test_queue_depth_is_waiting_plus_reserved_of_this_queue_only(quiet_db):
    """Messages waiting (all priority lists) and reserved for this queue count; others don't."""
    queue, other = f"q-{uuid.uuid4().hex[:8]}", f"q-{uuid.uuid4().hex[:8]}"
    try:
        quiet_db.rpush(queue, "m1", "m2")
        quiet_db.rpush(f"{queue}\x06\x163", "m3")
        quiet_db.rpush(other, "x")
        for tag, routing_key in (("t1", queue), ("t2", other), ("t3", other)):
            quiet_db.hset(UNACKED, tag, json.dumps([{"body": "..."}, "", routing_key]))
        quiet_db.hset(UNACKED, "junk", "not json")
        assert waiting(quiet_db, queue) == 3
        assert reserved(quiet_db, queue) == 1
        assert queue_depth(quiet_db, queue) == 4
        assert queue_depth(quiet_db, other) == 3
    finally:
        quiet_db.delete(queue, f"{queue}\x06\x163", other)
