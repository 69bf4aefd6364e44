"""kombu's Redis transport, hardened: an item on the queue that is not a Celery message
(garbage, a raw article pushed by hand, a non-JSON content type) goes to the dead-letter
list with its reason instead of taking the whole worker down.

Seen here with kombu 5.6/5.7: `LPUSH enrich 'not json'` made the worker exit with
"Unrecoverable error: JSONDecodeError". Selected by `broker_transport` in worker.app for
redis:// URLs. The two overridden methods follow kombu 5.6.2's own (pinned).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from worker.settings import get_settings

_ACCEPTED_CONTENT = {"application/json"}


def problem_with(item: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(envelope, None) for a well-formed JSON Celery message, else (None, why not)."""
    try:
        payload = loads(bytes_to_str(item))
    except Exception as exc:  # noqa: BLE001 - whatever the decoder raises
        return None, f"not JSON: {type(exc).__name__}: {str(exc)[:200]}"
    if not isinstance(payload, dict):
        return None, f"a JSON {type(payload).__name__}, not a message envelope"
    properties = payload.get("properties")
    if not isinstance(properties, dict) or "delivery_tag" not in properties or "body" not in payload:
        return None, "JSON without a Celery message envelope (properties, body): " \
                     "publish with `enrich publish` or worker.producer.publish"
    content_type = payload.get("content-type")
    if content_type not in _ACCEPTED_CONTENT:
        return None, f"content type {content_type!r} refused (JSON only); nothing was executed"
    return payload, None


class Channel(kombu_redis.Channel):
    def _park(self, item: bytes, queue: str, why: str) -> None:
        text = item.decode("utf-8", "replace")
        record = {
            "id": None, "task": None, "task_id": None, "queue": queue,
            "reason": "malformed_message", "error": why, "attempts": 1,
            "at": datetime.now(UTC).isoformat(),
            "payload": None, "payload_truncated": text[:2000],
        }
        with self.conn_or_acquire() as client:
            client.rpush(get_settings().dead_letter_key, json.dumps(record, ensure_ascii=False))
        kombu_redis.logger.error("malformed message dead-lettered: queue=%s reason=%s", queue, why)

    def _brpop_read(self, **options):
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            payload, why = problem_with(item)
            if payload is None:
                self._park(item, dest, why)
                raise Empty()
            self.connection._deliver(payload, dest)
            return True
        finally:
            self._in_poll = None

    def _get(self, queue):
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, pri))
                if item:
                    payload, why = problem_with(item)
                    if payload is None:
                        self._park(item, queue, why)
                        continue
                    return payload
            raise Empty()


class Transport(kombu_redis.Transport):
    Channel = Channel
