"""kombu's Redis transport, hardened: an item on the queue that is not a Celery message
(garbage, a raw article pushed by hand, a non-JSON content type such as pickle) goes to the
dead-letter list with its reason (`malformed_message`) instead of taking the whole worker
down; so does a message Celery would log and then drop unrun (a body that is not JSON or
is nested too deeply, an unknown enrich.* task, arguments that do not fit the task).

Seen here with kombu 5.6/5.7: `LPUSH enrich 'not json'` made the worker exit with
"Unrecoverable error: JSONDecodeError". Selected by `broker_transport` in worker.app for
redis:// and rediss:// URLs. The overridden methods follow kombu 5.6.2's own (pinned).

What kombu 5.6.2 does not do:
- no message lost between pop and record: BLMOVE into a per-consumer pending list instead
  of BRPOP (the loss window and the design are described above class QoS below);
- leases: a live worker re-stamps the messages it holds, so the visibility timeout only
  has to outlast a missed renewal, not the longest task (`lease_interval`);
- `unacked_restore_throttle`: kombu 5.6.2 has no such option; its sweep of messages left
  unacknowledged by dead workers runs on every 10th 10-second tick (~100 s). Here the sweep
  runs every `unacked_restore_throttle` seconds (ENRICH_UNACKED_RESTORE_THROTTLE).
- `tls_required` (set by worker.app for rediss://): a connection without TLS options is
  refused instead of silently going out in plain text.
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import uuid
from datetime import UTC, datetime
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from worker.app import ARTICLE_TASK, BATCH_TASK, MAX_BATCH
from worker.deadletter import count_in_metrics, new_entry_id
from worker.errors import ConfigurationError
from worker.settings import get_settings

_ACCEPTED_CONTENT = {"application/json"}
_OUR_TASK_PREFIX = "enrich."
_OUR_TASKS = frozenset({ARTICLE_TASK, BATCH_TASK})
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
    if task == BATCH_TASK:
        if len(args) != 1 or kwargs or not isinstance(args[0], list) \
                or not 1 <= len(args[0]) <= MAX_BATCH:
            return (f"{task} takes one argument, a list of 1 to {MAX_BATCH} articles, and no "
                    "keywords; nothing was executed")
        return None
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


# --- delivery: an atomic pop, and leases ---------------------------------------------------
# kombu keeps every delivered message in the `unacked` hash (tag -> message) and the
# `unacked_index` zset (tag -> time); any worker's sweep puts back onto the queue what has
# been there longer than the visibility timeout. What this transport changes:
#
# Atomic pop. kombu BRPOPs a message and records it in `unacked` only in a second round
# trip: a Redis (or worker) crash in between lost it (1 of 45 seen in tests/
# test_redis_restart.py). Here BLMOVE moves the message, atomically, from the queue into
# this consumer's own pending list; it is then recorded and removed from that list in one
# pipelined round trip (QoS.append). Each pending list is registered in the
# `unacked_pending` hash (list -> queue) with a lease key; a sweep moves the items of a list
# whose lease has expired back onto its queue. So a message is always in a queue, a
# pending list or `unacked` until it is acknowledged. (Measured: 10,000 no-op tasks under 6
# Redis restarts lost 2 with kombu's transport in 2 of 3 runs; with this one none in 3
# runs, and 5 messages came back from pending lists.)
#
# Leases. The live worker re-stamps the index score of every message it still holds (and
# renews its pending lists' lease keys) every `lease_interval` seconds (default: a fifth of
# the visibility timeout). "Older than the visibility timeout" then means "its worker
# stopped renewing": a task may run (or wait for a retry countdown) as long as it likes
# while its worker lives, and a dead worker's messages are back after the visibility
# timeout plus at most one sweep (`unacked_restore_throttle`).
#
# Cost per message: BLMOVE, then ZADD + HSET + LREM (one round trip), then HDEL + ZREM on
# the ack (one round trip): 6 commands, where kombu spends 9 (BRPOP, and MULTI/ZADD/HSET/
# EXEC twice). MULTI/EXEC is not needed: every prefix of each pipeline is a safe state
# (see QoS.append and QoS._remove_from_indices).

PENDING_REGISTRY_SUFFIX = "_pending"

# KEYS: registry, pending list, its lease key, its queue. Atomic, so a consumer renewing its
# lease meanwhile keeps its list; the items go back to the head of the queue (next out).
_RECLAIM = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[4], 'RIGHT', 'RIGHT') do moved = moved + 1 end
redis.call('HDEL', KEYS[1], KEYS[2])
return moved
"""


def _lease_key(pending: str | bytes) -> str:
    return f"{bytes_to_str(pending)}:lease"


def unacked_record(envelope: bytes | str, exchange: str, routing_key: str) -> bytes:
    """kombu's `unacked` entry, ``[envelope, exchange, routing_key]`` as JSON, made from the
    envelope's bytes as popped (the JSON object the message was decoded from) instead of
    re-encoding the decoded one: the same JSON value for restore, without 0.5 ms of the main
    process's CPU per 16-article message (98 KB)."""
    if isinstance(envelope, str):
        envelope = envelope.encode()
    return b"".join((b"[", envelope, b",", dumps(exchange).encode(), b",",
                     dumps(routing_key).encode(), b"]"))


class QoS(kombu_redis.QoS):
    """kombu's ack emulation without MULTI/EXEC, with the pending-list handover, and a sweep
    on a clock (every `unacked_restore_throttle` s) instead of every 10th call."""

    _last_sweep: float | None = None

    def append(self, message, delivery_tag):
        # Receipt. The message is in this consumer's pending list (BLMOVE). One pipelined
        # round trip, in this order; Redis applies some prefix of it if it or we die:
        # - nothing: the message is only in the pending list; this channel will never
        #   record it (it died, or Celery replaces the channel after the connection error),
        #   its lease expires and the sweep puts the message back onto the queue;
        # - ZADD only: the same, plus an index entry with no message, which the sweep drops
        #   once it is older than the visibility timeout (restore_by_tag finds nothing);
        # - ZADD + HSET: in `unacked` *and* the pending list: both come back, the message
        #   runs twice (the store is idempotent; the delivery counter counts both);
        # - all three: recorded, out of the pending list: the normal case.
        # HSET before ZADD would leave, after a crash, a hash entry no sweep ever finds.
        delivery = message.delivery_info
        popped = self.channel._take_popped()
        if popped is not None:
            record = unacked_record(popped[1], delivery["exchange"], delivery["routing_key"])
        else:  # BRPOP (Redis before 6.2): kombu's record, re-encoded from the decoded message
            record = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            pipe.zadd(self.unacked_index_key, {delivery_tag: time()})
            pipe.hset(self.unacked_key, delivery_tag, record)
            if popped is not None:
                pipe.lrem(popped[0], 1, popped[1])
            pipe.execute()
        virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self, delivery_tag, pipe=None):
        if pipe is not None:  # inside restore_by_tag's WATCH/MULTI transaction
            return super()._remove_from_indices(delivery_tag, pipe)
        # Ack (and reject without requeue): HDEL before ZREM, no MULTI. After HDEL alone the
        # index keeps a tag with no message: the sweep drops it (restore_by_tag finds no
        # message, restores nothing). Nothing applied: the message comes back after the
        # visibility timeout and runs again, as with kombu's transaction. A sweep restoring
        # this tag at the same moment WATCHes `unacked`, so the HDEL makes it restore nothing.
        with self.channel.conn_or_acquire() as client:
            return client.pipeline(transaction=False) \
                .hdel(self.unacked_key, delivery_tag) \
                .zrem(self.unacked_index_key, delivery_tag)

    def held_tags(self) -> list[str]:
        """Delivery tags delivered to this channel and not yet acknowledged."""
        return [tag for tag in list(self._delivered) if tag not in self._dirty]

    def restore_visible(self, start=0, num=10, interval=10):
        if not self._sweep_due(interval):
            return
        with self.channel.conn_or_acquire() as client:
            try:
                with kombu_redis.Mutex(client, self.unacked_mutex_key, self.unacked_mutex_expire):
                    ceil = time() - self.visibility_timeout
                    visible = client.zrevrangebyscore(
                        self.unacked_index_key, ceil, 0,
                        start=num and start, num=num, withscores=True)
                    for tag, _score in visible or []:
                        self.restore_by_tag(tag, client)
                    self.channel.reclaim_orphans(client)
            except kombu_redis.MutexHeld:
                pass

    def _sweep_due(self, interval: int) -> bool:
        throttle = self.channel.unacked_restore_throttle
        if not throttle:  # kombu's rule: every `interval`-th call
            self._vrestore_count += 1
            return (self._vrestore_count - 1) % interval == 0
        now = monotonic()
        if self._last_sweep is not None and now - self._last_sweep < throttle:
            return False
        self._last_sweep = now
        return True


class Channel(kombu_redis.Channel):
    QoS = QoS
    unacked_restore_throttle: float | None = None
    lease_interval: float | None = None
    tls_required = False
    from_transport_options = kombu_redis.Channel.from_transport_options + (
        "unacked_restore_throttle", "lease_interval", "tls_required")

    _popping: tuple[str, str] | None = None  # (queue, pending list) while a BLMOVE is out
    _popped: tuple[str, bytes] | None = None  # (pending list, item) until QoS.append
    _stranded = False  # a delivery failed after the move: check the pending list
    _atomic_pop: bool | None = None  # does the server have BLMOVE (asked once)
    _lease_due = 0.0

    def __init__(self, *args, **kwargs):
        self.consumer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._pending: dict[str, str] = {}  # this consumer's pending lists -> their queue
        super().__init__(*args, **kwargs)

    def _connparams(self, asynchronous=False):
        if self.tls_required and not self.connection.client.ssl:
            raise ConfigurationError("rediss:// broker without TLS options: refusing to "
                                     "connect in plain text (build the app with worker.app)")
        return super()._connparams(asynchronous=asynchronous)

    # --- leases -------------------------------------------------------------------------
    @property
    def pending_registry(self) -> str:
        return f"{self.unacked_key}{PENDING_REGISTRY_SUFFIX}"

    @property
    def lease_seconds(self) -> float:
        return self.lease_interval or max(1.0, self.visibility_timeout / 5)

    def refresh_leases(self) -> None:
        """When due: re-stamp the messages this channel holds, renew its pending lists."""
        now = monotonic()
        if now < self._lease_due:
            return
        held = self._qos.held_tags() if self._qos is not None else []
        if held or self._pending:
            with self.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
                if held:  # XX: never bring back a tag acked or restored meanwhile
                    pipe.zadd(self.unacked_index_key, dict.fromkeys(held, time()), xx=True)
                for pending, queue in self._pending.items():
                    pipe.set(_lease_key(pending), self.consumer_id,
                             ex=max(1, math.ceil(self.visibility_timeout)))
                    pipe.hset(self.pending_registry, pending, queue)
                pipe.execute()
        self._lease_due = now + self.lease_seconds

    def reclaim_orphans(self, client) -> None:
        """Put the items of pending lists whose consumer stopped renewing back on their queue."""
        registry = list(client.hgetall(self.pending_registry).items())
        if not registry:
            return
        pipe = client.pipeline(transaction=False)
        for pending, _ in registry:
            pipe.exists(_lease_key(pending))
        reclaim = client.register_script(_RECLAIM)
        for (pending, queue), alive in zip(registry, pipe.execute()):
            if alive:
                continue
            moved = reclaim(keys=[self.pending_registry, pending, _lease_key(pending), queue],
                            client=client)
            if moved and moved > 0:
                kombu_redis.logger.warning(
                    "returned %d message(s) of a lost consumer to queue %s (from %s)",
                    moved, bytes_to_str(queue), bytes_to_str(pending))

    # --- consuming ----------------------------------------------------------------------
    def _atomic_source(self) -> str | None:
        """The queue to BLMOVE from; None: BRPOP as kombu does (several queues or priority
        lists to watch at once, a global key prefix, or Redis older than 6.2)."""
        queues = self.active_queues
        if len(queues) != 1 or self.global_keyprefix:
            return None
        (queue,) = queues
        if any(self._q_for_pri(queue, pri) != queue for pri in self.priority_steps):
            return None
        if self._atomic_pop is None:
            self._atomic_pop = self._server_has_blmove()
        return queue if self._atomic_pop else None

    def _server_has_blmove(self) -> bool:
        try:
            with self.conn_or_acquire() as client:
                version = str(client.info("server").get("redis_version", "0"))
        except self.ResponseError:  # INFO refused by an ACL
            version = "0"
        if tuple(int(part) for part in version.split(".")[:2] if part.isdigit()) >= (6, 2):
            return True
        kombu_redis.logger.warning("Redis %s has no BLMOVE: consuming with BRPOP, which can "
                                   "lose a message popped as Redis goes down", version)
        return False

    def _brpop_start(self, timeout=None):
        queue = self._atomic_source()
        if queue is None:
            return super()._brpop_start(timeout)
        pending = f"{self.pending_registry}:{self.consumer_id}:{queue}"
        if pending not in self._pending:
            self._pending[pending] = queue
            self._lease_due = 0.0  # registered before anything moves into it
        if self._stranded:
            self._return_pending()
        self.refresh_leases()
        if timeout is None:
            timeout = self.brpop_timeout
        self._in_poll = self.client.connection
        self._popping = (queue, pending)
        self.client.connection.send_command("BLMOVE", queue, pending, "RIGHT", "LEFT",
                                            timeout or 0)

    def _return_pending(self) -> None:
        """After a failed delivery, nothing is in flight: what our pending lists hold is
        stuck there (the lease would keep the sweep off while we live)."""
        with self.conn_or_acquire() as client:
            for pending, queue in self._pending.items():
                while client.lmove(pending, queue, "RIGHT", "RIGHT"):
                    kombu_redis.logger.warning("returned a stranded message to queue %s", queue)
        self._stranded = False

    def _take_popped(self) -> tuple[str, bytes] | None:
        popped, self._popped = self._popped, None
        return popped

    def _poll_error(self, type, **options):
        if type == "BRPOP" and self._popping:
            return self._brpop_read(**options)  # read (never drop) a moved message
        return super()._poll_error(type, **options)

    def _park(self, item: bytes, queue: str, why: str, popped_into: str | None = None) -> None:
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
            pipe = client.pipeline(transaction=False)
            pipe.rpush(get_settings().dead_letter_key, json.dumps(record, ensure_ascii=False))
            if popped_into:  # dead-lettered first: a crash between parks it twice, loses nothing
                pipe.lrem(popped_into, 1, item)
            pipe.execute()
        count_in_metrics("malformed_message")
        kombu_redis.logger.error("malformed message dead-lettered: queue=%s reason=%s", queue, why)

    def _brpop_read(self, **options):
        popping, self._popping = self._popping, None
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, "BLMOVE" if popping else "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not reply:
                raise Empty()
            if popping:
                (queue, pending), item = popping, reply
            else:
                dest, item = reply
                queue, pending = bytes_to_str(dest).rsplit(self.sep, 1)[0], None
            self._queue_cycle.rotate(queue)
            payload, why = problem_with(item)
            if payload is None:
                self._park(item, queue, why, popped_into=pending)
                raise Empty()
            if pending is None:
                self.connection._deliver(payload, queue)
                return True
            self._popped = (pending, item)
            try:
                self.connection._deliver(payload, queue)
            except BaseException:
                self._stranded = True  # perhaps left in the pending list: see _brpop_start
                raise
            finally:
                unrecorded, self._popped = self._popped, None
            if unrecorded is not None:  # a no-ack consumer: nothing recorded it
                with self.conn_or_acquire() as client:
                    client.lrem(pending, 1, item)
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
        # Each channel renews its leases when due (every `lease_interval` s).
        loop.call_repeatedly(1, self._refresh_leases)

    def _refresh_leases(self) -> None:
        for channel in list(self.cycle._channels):
            try:
                channel.refresh_leases()
            except self.connection_errors as exc:  # the consumer's own read reconnects
                kombu_redis.logger.warning("could not renew delivery leases: %r", exc)
