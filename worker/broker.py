"""Reading the broker's state: how much work a queue holds.

kombu's Redis transport keeps a queue as a list (one per priority step) and every message
delivered but not yet acknowledged in one hash, `unacked`, shared by all queues of the
database. Queue depth = waiting + reserved for *this* queue, which is what an autoscaler
should count (a busy worker's reserved messages are still work to do).
"""

from __future__ import annotations

import json

import redis

UNACKED = "unacked"
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def waiting(client: redis.Redis, queue: str) -> int:
    keys = [queue] + [f"{queue}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS if p]
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.llen(key)
        return sum(pipe.execute())


def reserved(client: redis.Redis, queue: str) -> int:
    """Messages of `queue` delivered to a worker and not yet acknowledged."""
    count = 0
    for _, raw in client.hscan_iter(UNACKED, count=500):
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        count += routing_key == queue
    return count


def queue_depth(client: redis.Redis, queue: str) -> int:
    return waiting(client, queue) + reserved(client, queue)
