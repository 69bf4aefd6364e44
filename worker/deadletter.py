"""Dead letters: a Redis list of what could not be enriched, each with its reason.

An entry keeps the stage it failed at and that stage's input, so it can be read and
replayed from there (`enrich dlq`, worker/dlq.py): {"entry_id", "id", "task", "stage",
"task_id", "reason", "error", "attempts", "deliveries", "at", "payload"}. `entry_id` names one entry
(an article can be dead-lettered more than once); `deliveries` is set when the delivery
counter knew it.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import redis

_MAX_PAYLOAD_CHARS = 1_000_000


def new_entry_id() -> str:
    return uuid.uuid4().hex[:12]


def entry(
    *, article_id: str | None, task: str, reason: str, error: str, payload: Any,
    stage: str | None = None,
    task_id: str | None = None, attempts: int = 1, deliveries: int | None = None,
) -> dict[str, Any]:
    body = json.dumps(payload, ensure_ascii=False, default=repr)
    record: dict[str, Any] = {
        "entry_id": new_entry_id(),
        "id": article_id,
        "task": task,
        "stage": stage,
        "task_id": task_id,
        "reason": reason,
        "error": error[:2000],
        "attempts": attempts,
        "at": datetime.now(UTC).isoformat(),
    }
    if deliveries is not None:
        record["deliveries"] = deliveries
    if len(body) <= _MAX_PAYLOAD_CHARS:
        record["payload"] = payload
    else:
        record["payload"] = None
        record["payload_truncated"] = body[:2000]
    return record


def count_in_metrics(reason: str) -> None:
    """Count a dead letter in the worker's metrics (only where worker.ops is loaded)."""
    ops = sys.modules.get("worker.ops")
    if ops is not None:
        ops.record_dead_letter(reason)


class DeadLetters:
    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key

    def add(self, record: dict[str, Any]) -> None:
        self.client.rpush(self.key, json.dumps(record, ensure_ascii=False, default=repr))
        count_in_metrics(record.get("reason") or "unknown")

    def count(self) -> int:
        return int(self.client.llen(self.key))

    def list(self, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
        return [json.loads(item) for item in self.client.lrange(self.key, start, stop)]

    def raw(self, start: int = 0, stop: int = -1) -> list[bytes]:
        """Entries as stored (oldest first): remove() takes these back."""
        return list(self.client.lrange(self.key, start, stop))

    def remove(self, raw: bytes) -> bool:
        """Remove exactly this entry (wherever it is now); False if it is already gone."""
        return bool(self.client.lrem(self.key, 1, raw))

    def drop_oldest(self, count: int) -> int:
        """Remove the `count` oldest entries; entries added meanwhile stay. Returns how many."""
        if count <= 0:
            return 0
        before, _ = self.client.pipeline(transaction=True).llen(self.key).ltrim(
            self.key, count, -1).execute()
        return min(count, int(before))
