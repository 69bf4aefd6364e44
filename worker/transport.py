"""kombu's Redis transport, hardened: an item on the queue that is not a Celery message
(garbage, a raw article pushed by hand, a non-JSON content type such as pickle) goes to the
dead-letter list with its reason (`malformed_message`) instead of taking the whole worker
down; so does a message Celery would log and then drop unrun (a body that is not JSON or
is nested too deeply, an unknown enrich.* task, arguments that do not fit the task).

Seen here with kombu 5.6/5.7: `LPUSH enrich 'not json'` made the worker exit with
"Unrecoverable error: JSONDecodeError". Selected by `broker_transport` in worker.app for
redis:// and rediss:// URLs. The two overridden read methods follow kombu 5.6.2's own (pinned).

Two more things kombu 5.6.2 does not do:
- `unacked_restore_throttle`: kombu 5.6.2 has no such option; its sweep of messages left
  unacknowledged by dead workers runs on every 10th 10-second tick (~100 s). Here the sweep
  runs every `unacked_restore_throttle` seconds (ENRICH_UNACKED_RESTORE_THROTTLE).
- `tls_required` (set by worker.app for rediss://): a connection without TLS options is
  refused instead of silently going out in plain text.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from worker.deadletter import new_entry_id
from worker.errors import ConfigurationError
from worker.deadletter import count_in_metrics
from worker.settings import get_settings

_ACCEPTED_CONTENT = {"application/json"}
_OUR_TASK_PREFIX = "enrich."
_OUR_TASKS = frozenset({"enrich.article"})
_STAGES = ("clean", "language", "entities", "dedupe", "store")


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
    why = _problem_with_task(payload, properties)
    return (None, why) if why else (payload, None)


def _problem_with_task(envelope: dict[str, Any], properties: dict[str, Any]) -> str | None:
    """Why Celery would drop this envelope without running it, or None.

    Seen here with stock Celery 5.6.3: a body that is not JSON (or nested too deeply for
    the decoder), an unregistered task name and arguments that do not fit the task were
    each logged and then acknowledged: the message was gone, with no dead letter. Checked
    for this project's tasks (enrich.*); other task names are left to Celery.
    """
    headers = envelope.get("headers")
    task = headers.get("task") if isinstance(headers, dict) else None
    if not isinstance(task, str) or not task.startswith(_OUR_TASK_PREFIX):
        return None  # not one of our tasks: control replies (inspect, ping) have no task
    if task not in _OUR_TASKS:
        return f"unknown task {task[:100]!r}; nothing was executed"
    body = envelope.get("body")
    try:
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body, validate=True)
        decoded = json.loads(body)
    except RecursionError:
        return "body nested too deeply to decode; nothing was executed"
    except (ValueError, TypeError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
        return f"body not JSON: {type(exc).__name__}: {str(exc)[:200]}"
    if not (isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[0], list)
            and isinstance(decoded[1], dict) and isinstance(decoded[2], dict)):
        return "body is not a Celery task body [args, kwargs, embed]"
    args, kwargs, _ = decoded
    if len(args) != 1 or set(kwargs) - {"start"}:
        return (f"{task} takes one argument (the article or document) and optionally start=, "
                f"got {len(args)} positional and keyword {sorted(kwargs)[:5]}; nothing was "
                "executed")
    if kwargs.get("start", "clean") not in _STAGES:
        return f"{task}: start must be one of {', '.join(_STAGES)}; nothing was executed"
    return None


def _names_in(item: bytes) -> tuple[str | None, str | None]:
    """(task name, task id) from an envelope's headers, if there are any to read."""
    try:
        headers = json.loads(item).get("headers")
        return str(headers["task"])[:200], str(headers["id"])[:200]
    except Exception:  # noqa: BLE001 - anything unreadable has no names
        return None, None


class QoS(kombu_redis.QoS):
    """Sweeps on a clock (every `unacked_restore_throttle` s) instead of every 10th call."""

    _last_sweep: float | None = None

    def restore_visible(self, start=0, num=10, interval=10):
        throttle = getattr(self.channel, "unacked_restore_throttle", None)
        if not throttle:
            return super().restore_visible(start=start, num=num, interval=interval)
        now = monotonic()
        if self._last_sweep is not None and now - self._last_sweep < throttle:
            return None
        self._last_sweep = now
        return super().restore_visible(start=start, num=num, interval=1)


class Channel(kombu_redis.Channel):
    QoS = QoS
    unacked_restore_throttle: float | None = None
    tls_required = False
    from_transport_options = kombu_redis.Channel.from_transport_options + (
        "unacked_restore_throttle", "tls_required")

    def _connparams(self, asynchronous=False):
        if self.tls_required and not self.connection.client.ssl:
            raise ConfigurationError("rediss:// broker without TLS options: refusing to "
                                     "connect in plain text (build the app with worker.app)")
        return super()._connparams(asynchronous=asynchronous)

    def _park(self, item: bytes, queue: str, why: str) -> None:
        text = item[:8000].decode("utf-8", "replace")
        task, task_id = _names_in(item)
        record = {
            "entry_id": new_entry_id(),
            "id": None, "task": task, "task_id": task_id, "queue": queue,
            "reason": "malformed_message", "error": why, "attempts": 1,
            "at": datetime.now(UTC).isoformat(),
            "payload": None, "payload_truncated": text[:2000],
        }
        with self.conn_or_acquire() as client:
            client.rpush(get_settings().dead_letter_key, json.dumps(record, ensure_ascii=False))
        count_in_metrics("malformed_message")
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

    def register_with_event_loop(self, connection, loop):
        super().register_with_event_loop(connection, loop)
        # kombu asks for a sweep every 10 s; ask more often when the throttle is shorter.
        throttle = connection.client.transport_options.get("unacked_restore_throttle")
        if throttle and throttle < 10:
            loop.call_repeatedly(throttle, self.cycle.maybe_restore_messages)
