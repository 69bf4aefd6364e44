"""Dead letters: a Redis list of what could not be enriched, each with its reason.

An entry keeps the stage it failed at and that stage's input, so it can be read and
replayed from there: {"id", "task", "reason", "error", "attempts", "at", "payload"}.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import redis

_MAX_PAYLOAD_CHARS = 1_000_000


def entry(
    *, article_id: str | None, task: str, reason: str, error: str, payload: Any,
    task_id: str | None = None, attempts: int = 1,
) -> dict[str, Any]:
    body = json.dumps(payload, ensure_ascii=False, default=repr)
    record: dict[str, Any] = {
        "id": article_id,
        "task": task,
        "task_id": task_id,
        "reason": reason,
        "error": error[:2000],
        "attempts": attempts,
        "at": datetime.now(UTC).isoformat(),
    }
    if len(body) <= _MAX_PAYLOAD_CHARS:
        record["payload"] = payload
    else:
        record["payload"] = None
        record["payload_truncated"] = body[:2000]
    return record


class DeadLetters:
    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key

    def add(self, record: dict[str, Any]) -> None:
        self.client.rpush(self.key, json.dumps(record, ensure_ascii=False, default=repr))

    def count(self) -> int:
        return int(self.client.llen(self.key))

    def list(self, start: int = 0, stop: int = -1) -> list[dict[str, Any]]:
        return [json.loads(item) for item in self.client.lrange(self.key, start, stop)]
